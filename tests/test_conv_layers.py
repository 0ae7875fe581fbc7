"""mmgen.layers.conv: shapes, group counts, embedding input, identity init, errors."""
import pytest
import torch

from mmgen.layers import AttnBlock, Downsample, ResBlock, Upsample, group_norm, num_groups


def test_num_groups():
    assert num_groups(64) == 32 and num_groups(8) == 8 and num_groups(48) == 24 and num_groups(3) == 3
    assert group_norm(48).num_groups == 24


@pytest.mark.parametrize("mode", ["add", "scale_shift"])
def test_resblock_emb(mode):
    blk = ResBlock(16, 32, emb_dim=8, emb_mode=mode, groups=8)
    x, e = torch.randn(2, 16, 8, 8), torch.randn(2, 8)
    y = blk(x, e)
    assert y.shape == (2, 32, 8, 8)
    y.sum().backward()
    assert all(p.grad is not None for p in blk.parameters())
    # the embedding changes the output per sample
    assert not torch.allclose(blk(x, e), blk(x, torch.randn(2, 8)))
    with pytest.raises(ValueError, match="pass emb"):
        blk(x)


def test_resblock_zero_init_is_skip():
    blk = ResBlock(8, 8, zero_init=True)
    x = torch.randn(2, 8, 4, 4)
    assert torch.equal(blk(x), x)
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        blk(torch.randn(2, 4, 4, 4))


def test_down_up_attn():
    x = torch.randn(2, 8, 8, 8)
    assert Downsample(8)(x).shape == (2, 8, 4, 4)
    assert Downsample(8, conv=False)(x).shape == (2, 8, 4, 4)
    assert Downsample(8, out_ch=16)(x).shape == (2, 16, 4, 4)
    assert Upsample(8)(x).shape == (2, 8, 16, 16)
    a = AttnBlock(8, num_heads=2)
    assert torch.equal(a(x), x)  # zero-initialised output projection
    with pytest.raises(ValueError, match="even"):
        Downsample(8)(torch.randn(1, 8, 5, 5))

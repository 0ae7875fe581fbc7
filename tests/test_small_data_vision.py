"""The small-data options of the encoders (conv / CCT / shifted-patch stems, sequence pooling)
and the ResNet-18 baseline: shapes, gradients, parity with torchvision, one-batch overfit."""
import pytest
import torch

from mmgen import create_model
from mmgen.layers import STEMS, make_patch_embed
from mmgen.models.resnet import ResNet, ResNetConfig
from mmgen.models.swin import SwinConfig
from mmgen.models.vit import ViTConfig

torchvision = pytest.importorskip("torchvision")

VIT = dict(img_size=32, patch_size=4, num_classes=10, embed_dim=32, depth=1, num_heads=2)
SWIN = dict(img_size=32, patch_size=2, window_size=4, num_classes=10, embed_dim=16, depths=(1, 1),
            num_heads=(2, 4))


def _all_grads(model, x):
    model.train()
    model(x).float().square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


@pytest.mark.parametrize("stem", STEMS)
def test_stems_shapes_and_grads(stem):
    pe = make_patch_embed(stem, 32, 4, 3, 24, stem_width=16)
    x = torch.randn(2, 3, 32, 32)
    tokens, grid = pe(x)
    assert tokens.shape == (2, 64, 24) and grid == (8, 8)
    assert pe.forward_map(x).shape == (2, 24, 8, 8)
    vit = create_model("vit_tiny", **{**VIT, "stem": stem, "stem_width": 16})
    assert vit(x).shape == (2, 10)
    _all_grads(vit, x)
    swin = create_model("swin_tiny_patch2_window4_32", **{**SWIN, "stem": stem, "stem_width": 16})
    assert swin(x).shape == (2, 10) and swin.forward_features(x).shape == (2, 8, 8, 32)
    _all_grads(swin, x)


def test_stems_dynamic_size_and_errors():
    pe = make_patch_embed("conv", 32, 4, 3, 8, dynamic_img_size=True)
    assert pe(torch.randn(1, 3, 48, 40))[1] == (12, 10)
    with pytest.raises(ValueError, match="stem must be one of"):
        make_patch_embed("dw", 32, 4, 3, 8)
    with pytest.raises(ValueError, match="power-of-two"):
        make_patch_embed("conv", 36, 6, 3, 8)
    with pytest.raises(ValueError, match="ViTConfig.stem"):
        ViTConfig(**VIT, stem="nope")
    with pytest.raises(ValueError, match="SwinConfig.stem"):
        SwinConfig(**SWIN, stem="nope")
    with pytest.raises(ValueError, match="expected 3 input channels"):
        make_patch_embed("spt", 32, 4, 3, 8)(torch.randn(1, 1, 32, 32))


def test_shifted_patches_see_their_neighbours():
    """The SPT input is the image plus four diagonal half-patch shifts: a lone pixel reaches the
    patch it lies in and, through the shifts, its diagonal neighbours, nothing else."""
    pe = make_patch_embed("spt", 16, 4, 1, 8)
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 5, 5] = 1.0  # inside patch (1, 1), 1 px from its top-left corner
    seen = []
    pe.patch_norm.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        pe.forward_map(x)
    raw = seen[0][0]  # (4, 4, 5 * 16): each patch's pixels in the image and its four shifts
    hit = {tuple(i.tolist()) for i in raw.abs().sum(-1).nonzero()}
    assert (1, 1) in hit and (0, 0) in hit and hit <= {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_sequence_pooling():
    vit = create_model("vit_tiny", **{**VIT, "global_pool": "seq", "class_token": False}).eval()
    x = torch.randn(2, 3, 32, 32)
    tokens = vit.forward_features(x)
    with torch.no_grad():  # equal weights: sequence pooling is the mean
        vit.seq_pool.weight.zero_()
        torch.testing.assert_close(vit.forward_head(tokens, pre_logits=True), tokens.mean(1))
    plain = create_model("vit_tiny", **VIT)
    plain.reset_classifier(5, global_pool="seq")
    assert plain(x).shape == (2, 5) and plain.seq_pool is not None


def test_resnet18_cifar_matches_torchvision():
    """Our ResNet-18 with the CIFAR stem is torchvision's resnet18 with conv1 = 3x3 stride 1 and
    no max-pool: the same state dict gives the same logits."""
    tv = torchvision.models.resnet18(num_classes=10)
    tv.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    tv.maxpool = torch.nn.Identity()
    ours = create_model("resnet18_cifar")
    ours.load_torchvision_state_dict(tv.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), tv.eval()(x), atol=1e-5, rtol=0)
    assert ours.num_params() == sum(p.numel() for p in tv.parameters())
    imagenet = ResNet(ResNetConfig(stem="imagenet", layers=(1, 1), widths=(8, 16)))
    assert imagenet.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 16, 4, 4)


def test_resnet_errors():
    with pytest.raises(ValueError, match="stem must be one of"):
        ResNetConfig(stem="deep")
    with pytest.raises(ValueError, match="one entry per stage"):
        ResNetConfig(layers=(1, 1), widths=(8,))
    with pytest.raises(ValueError, match=r"expected images \(B, 3, H, W\)"):
        create_model("resnet_tiny")(torch.randn(1, 1, 32, 32))


@pytest.mark.parametrize("name,over", [
    ("resnet_tiny", {}),
    ("vit_tiny", {**VIT, "stem": "conv", "global_pool": "avg"}),
    ("swin_tiny_patch2_window4_32", {**SWIN, "stem": "conv"}),
    ("swin_tiny_conv_patch4_window4_32", {}),  # the 2-stage, patch-4 small-data preset as shipped
], ids=["resnet", "vit_conv", "swin_conv", "swin_conv_p4"])
def test_loss_decreases_on_one_batch(name, over):
    torch.manual_seed(0)
    model = create_model(name, **over).train()
    batch = model.example_batch(8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_budget_steps_and_curve_from_logged_evals(tmp_path, capsys):
    import json

    from mmgen.cli import main
    from mmgen.train.recipes.vision import RESNET18_STEPS_PER_S, budget_steps
    assert budget_steps(1.0, 60) == round(60 * RESNET18_STEPS_PER_S)
    assert budget_steps(2.5, 600) == round(600 * RESNET18_STEPS_PER_S * 2.5)
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    from mmgen.train.recipes import get_recipe
    r = get_recipe("resnet18_animal_mnist_1min")
    rc = {"recipe": r.name, "model_overrides": dict(r.model_overrides), "train": dict(r.train)}
    (run / "run_config.json").write_text(json.dumps(rc))
    other = tmp_path / "runs" / "b"  # the same recipe with another learning rate: left out
    other.mkdir()
    (other / "run_config.json").write_text(json.dumps({**rc, "train": {**rc["train"], "lr": 1.0}}))
    (other / "metrics.jsonl").write_text(json.dumps({"step": 120, "val/acc": 0.1}) + "\n")
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 10, "loss": 2.0}, {"step": 60, "val/acc": 0.5}, {"step": 120, "val/acc": 0.8}]) + "\n")
    png = tmp_path / "curve.png"
    assert main(["vision-curve", "--root", str(tmp_path / "runs"), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| ResNet-18 | `resnet18_animal_mnist_1min` | 120 |" in out and "80.0 %" in out
    assert "10.0 %" not in out and "left out" in out
    assert png.stat().st_size > 1000
    assert main(["vision-curve", "--root", str(tmp_path / "empty"), "--png", str(png)]) == 1


def test_classify_command_reports_exact_accuracy(tmp_path, capsys):
    """`mmgen classify RUN`: accuracy and loss over every image of the split, one JSON line."""
    import json

    from mmgen.cli import main
    torch.manual_seed(0)
    create_model("vit_tiny_patch4_32", num_classes=10).save_pretrained(tmp_path / "vit")
    assert main(["classify", str(tmp_path / "vit"), "--batch-size", "500"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n"] == 1000 and 0.0 <= res["acc"] <= 1.0 and res["loss"] > 0 and res["split"] == "test"

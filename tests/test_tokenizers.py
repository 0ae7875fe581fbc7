import json
import warnings

import pytest
import torch

from mmgen.data.collate import CaptionCollate, tokenize_captions
from mmgen.text import ByteTokenizer, ClipBPETokenizer, get_tokenizer, load_tokenizer

TEXTS = ["hello world", "a red circle above a blue square", "你好，世界", "emoji 😀👍🏽🇫🇷 ok",
         "Ünïcödé\ttabs\nnewlines", ""]


def test_byte_roundtrip_any_language():
    tok = get_tokenizer("byte")
    assert tok.vocab_size == 259 and (tok.bos_id, tok.eos_id, tok.pad_id) == (256, 257, 258)
    for t in TEXTS:
        ids = tok.encode(t, add_bos=True, add_eos=True)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        assert all(0 <= i < 256 for i in ids[1:-1])
        assert tok.decode(ids) == t
    assert tok.encode("A") == [65]
    assert tok.encode("你") == list("你".encode("utf-8"))


def test_byte_decode_errors():
    tok = ByteTokenizer()
    assert tok.decode([0xE4, 0xBD]) == "\ufffd"  # cut multi-byte char: replaced, no raise
    with pytest.raises(ValueError, match=r"\[0, 259\)"):
        tok.decode([300])
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"bytes")


def test_clip_bpe_matches_open_clip():
    import open_clip

    tok = get_tokenizer("clip_bpe")
    assert tok.vocab_size == 49408 and tok.bos_id == 49406 and tok.eos_id == 49407 and tok.pad_id == 0
    for t in TEXTS[:4]:
        ref = open_clip.tokenize([t])[0]
        batch = tokenize_captions([t], tok, 77)
        assert torch.equal(batch["input_ids"][0], ref)
        assert int(batch["eot_index"][0]) == int(ref.argmax())  # open_clip pools at argmax
    assert tok.decode(tok.encode("A Red Circle, above!", add_bos=True, add_eos=True)) == "a red circle , above !"


def test_pruned_roundtrip(tmp_path):
    caps = ["a red circle above a blue square", "a photo of a cat.", "a green star left of a cyan cross"]
    tok = ClipBPETokenizer.pruned(caps)
    full = get_tokenizer("clip_bpe")
    assert tok.is_pruned and tok.vocab_size == 4 + len({i for c in caps for i in full.encode(c)})
    assert tok.vocab_size < 30
    for c in caps:
        ids = tok.encode(c, add_bos=True, add_eos=True)
        assert max(ids) < tok.vocab_size
        assert tok.decode(ids) == full.decode(full.encode(c))
    # unseen words map to unk
    ids = tok.encode("a purple hexagon")
    assert tok.unk_id in ids and tok.decode(ids).startswith("a <unk>")
    # save/load json round trip, same ids
    tok.save(tmp_path)
    d = json.loads((tmp_path / "tokenizer.json").read_text())
    assert d["type"] == "clip_bpe" and len(d["kept"]) == tok.vocab_size - 4
    tok2 = load_tokenizer(tmp_path)
    assert isinstance(tok2, ClipBPETokenizer) and tok2.vocab_size == tok.vocab_size
    for c in caps + ["a purple hexagon"]:
        assert tok2.encode(c) == tok.encode(c)
    assert get_tokenizer(str(tmp_path)).encode(caps[0]) == tok.encode(caps[0])
    assert ClipBPETokenizer.load(tmp_path).kept == tok.kept
    with pytest.raises(ValueError, match="ByteTokenizer"):
        ByteTokenizer.load(tmp_path)


def test_byte_save_load(tmp_path):
    get_tokenizer("byte").save(tmp_path)
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, ByteTokenizer) and tok.decode(tok.encode("ok 😀")) == "ok 😀"


def test_unknown_tokenizer_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="byte"):
        get_tokenizer("sentencepiece")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


def test_collate_padding_mask_eot():
    tok = get_tokenizer("byte")
    b = tokenize_captions(["ab", "abcd"], tok, 8)
    assert b["input_ids"].shape == (2, 8) and b["attention_mask"].dtype == torch.bool
    assert b["input_ids"][0].tolist() == [256, 97, 98, 257, 258, 258, 258, 258]
    assert b["attention_mask"][0].tolist() == [True] * 4 + [False] * 4
    assert b["eot_index"].tolist() == [3, 5]
    b = tokenize_captions(["ab", "abcd"], tok, 8, pad_to="longest")
    assert b["input_ids"].shape == (2, 6)


def test_collate_overflow_error_or_warn():
    tok = get_tokenizer("byte")
    with pytest.raises(ValueError, match="context_length is 5"):
        tokenize_captions(["abcdef"], tok, 5)
    with pytest.warns(UserWarning, match="truncated 1 of 2"):
        b = tokenize_captions(["abcdef", "a"], tok, 5, on_overflow="truncate")
    assert b["input_ids"][0].tolist() == [256, 97, 98, 99, 257]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing cut -> no warning
        tokenize_captions(["abc"], tok, 5, on_overflow="truncate")


def test_caption_collate_items():
    items = [{"image": torch.zeros(3, 4, 4), "label": i, "caption": f"cap {i}"} for i in range(3)]
    b = CaptionCollate("clip_bpe", 16)(items)
    assert b["image"].shape == (3, 3, 4, 4) and b["label"].tolist() == [0, 1, 2]
    assert b["input_ids"].shape == (3, 16) and b["caption"][2] == "cap 2"

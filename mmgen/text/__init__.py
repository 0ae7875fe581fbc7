"""Text utilities: tokenizers (byte-level UTF-8 and open_clip's CLIP BPE), the caption
tokenizer every model uses and vocabularies pruned to a caption corpus."""
from .captions import CaptionTokenizer, caption_corpus, resolve_vocabulary, tokenizer_from_captions
from .tokenizers import (ByteTokenizer, ClipBPETokenizer, Tokenizer, get_tokenizer,
                         list_tokenizers, load_tokenizer)

__all__ = ["CaptionTokenizer", "caption_corpus", "resolve_vocabulary", "tokenizer_from_captions",
           "Tokenizer", "ByteTokenizer", "ClipBPETokenizer", "get_tokenizer", "load_tokenizer",
           "list_tokenizers"]

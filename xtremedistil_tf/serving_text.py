"""Graph pieces of the `tag_text` signature: sentences in, word tags out.

Tokenization runs in the graph with tensorflow-text, so a TF Serving client can send raw text.
It reproduces what `features.make_windows` does with the Hugging Face tokenizer:

- words are whitespace-separated, as Python's `str.split()` splits them (every character for
  which `str.isspace()` is true separates words);
- each word is tokenized on its own into sub-words, so "don't" is one word of several sub-words:
  WordPiece vocabularies (the BERT family, uncased or cased) with `FastBertTokenizer` (BERT
  normalisation, punctuation splitting, WordPiece); SentencePiece Unigram vocabularies (XLM-R,
  mBERT-free multilingual models such as multilingual-e5) with `SentencepieceTokenizer`, from a
  SentencePiece model rebuilt from `tokenizer.json` (`sentencepiece_model`: same pieces, ids,
  scores and precompiled normaliser, so ids equal the Hugging Face tokenizer's);
- a word that tokenizes to nothing (control characters only) becomes the unknown token;
- a word's tag is the label of its first sub-word.

Other tokenizers (byte-level BPE, WordPiece without BERT normalisation) are refused with
`UnsupportedTokenizer`.

Truncation. The signature tags one window per sentence: the first words whose sub-words fit in
`max_seq_length - 2` positions. Words after that are returned with the tag "" and score 0 (not
"O": the model never saw them). `python -m xtremedistil_tf.predict` windows long sentences and
tags every word; use it, or `serving_default` with client-side windows, for long inputs.
"""

from __future__ import annotations

import base64
import json
import struct

import tensorflow as tf

# Python's str.split() separators, as one RE2 character class.
_WHITESPACE = "[" + "".join(
    f"\\x{{{c:x}}}" for c in range(0x110000) if chr(c).isspace()) + "]+"


# What Hugging Face's BertNormalizer(clean_text=True) removes (tabs and newlines never occur
# inside a word).
_DROPPED = "[\\x{fffd}\\p{C}]"


class UnsupportedTokenizer(ValueError):
    """The tokenizer has no tensorflow-text equivalent here; the message says why."""


def available() -> bool:
    """True when tensorflow-text imports (its ops are then registered in this process)."""
    try:
        import tensorflow_text  # noqa: F401
    except ImportError:
        return False
    return True


def wordpiece_settings(tokenizer) -> dict:
    """Reads what `FastBertTokenizer` needs from a Hugging Face fast tokenizer.

    Returns:
        dict with `vocab` (tokens in id order), `suffix_indicator`, `unknown_token`,
        `max_bytes_per_word` and `lower_case` (lower-casing + NFD + accent stripping).

    Raises:
        UnsupportedTokenizer: not a WordPiece vocabulary with BERT normalisation and
            pre-tokenization, or a normaliser combination tensorflow-text cannot reproduce.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UnsupportedTokenizer("tag_text needs a fast tokenizer (tokenizer.json)")
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    norm, pre = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
    if model.get("type") != "WordPiece":
        raise UnsupportedTokenizer(
            f"tag_text supports WordPiece and SentencePiece Unigram vocabularies, not "
            f"{model.get('type')}; export without it")
    if norm.get("type") != "BertNormalizer" or pre.get("type") != "BertPreTokenizer":
        raise UnsupportedTokenizer(
            f"tag_text needs BERT normalisation and pre-tokenization, not {norm.get('type')} + "
            f"{pre.get('type')}")
    lower = bool(norm.get("lowercase"))
    strip = norm.get("strip_accents")
    strip = lower if strip is None else bool(strip)
    if strip != lower:
        raise UnsupportedTokenizer(
            f"tensorflow-text lower-cases and strips accents together; this tokenizer has "
            f"lowercase={lower}, strip_accents={strip}")
    vocab_map = model["vocab"]
    vocab = [""] * (max(vocab_map.values()) + 1)
    for token, i in vocab_map.items():
        vocab[i] = token
    for i, token in enumerate(vocab):  # ids must be positions; fill holes with unmatchable tokens
        if not token:
            vocab[i] = f"[unused-hole-{i}]"
    return {
        "vocab": vocab,
        "suffix_indicator": model.get("continuing_subword_prefix", "##"),
        "unknown_token": model.get("unk_token", "[UNK]"),
        # HF counts characters, tensorflow-text bytes: equal for ASCII words (the ones that
        # get long in practice: URLs, hashtags).
        "max_bytes_per_word": int(model.get("max_input_chars_per_word", 100)),
        "lower_case": lower,
    }


def tokenizer_settings(tokenizer) -> dict:
    """What the in-graph tokenizer needs: `wordpiece_settings` (kind "wordpiece") for WordPiece
    vocabularies, else {"kind": "sentencepiece", "model": serialized SentencePiece model}.

    Raises:
        UnsupportedTokenizer: neither a BERT WordPiece nor a SentencePiece Unigram tokenizer.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UnsupportedTokenizer("tag_text needs a fast tokenizer (tokenizer.json)")
    spec = json.loads(backend.to_str())
    if (spec.get("model") or {}).get("type") == "Unigram":
        return {"kind": "sentencepiece", "model": sentencepiece_model(spec)}
    return {"kind": "wordpiece", **wordpiece_settings(tokenizer)}


def sentencepiece_model(spec: dict) -> bytes:
    """A serialized SentencePiece `ModelProto` equivalent to a Hugging Face Unigram
    `tokenizer.json` (`spec`): its pieces in id order (so SentencePiece ids are the HF ids), their
    scores, the special pieces' types, and the precompiled normaliser (NFKC for XLM-R).

    Raises:
        UnsupportedTokenizer: byte fallback, or pre-tokenization other than Metaspace with a
            prefix space (what SentencePiece's dummy prefix does).
    """
    model = spec["model"]
    if model.get("byte_fallback"):
        raise UnsupportedTokenizer("tag_text: SentencePiece with byte fallback is not supported")
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre])
    metaspace = [p for p in steps if p.get("type") == "Metaspace"]
    if len(steps) != 1 or not metaspace or metaspace[0].get("replacement", "▁") != "▁" or not (
            metaspace[0].get("add_prefix_space", True)
            and metaspace[0].get("prepend_scheme", "always") == "always"):
        raise UnsupportedTokenizer(
            f"tag_text needs SentencePiece's Metaspace pre-tokenization, not {pre.get('type')}")
    charsmap = b""
    norm = spec.get("normalizer") or {}
    for step in norm.get("normalizers", [norm] if norm else []):
        if step.get("type") == "Precompiled":
            charsmap = base64.b64decode(step["precompiled_charsmap"])
        elif not (step.get("type") == "Replace" and step.get("content") == " "):
            raise UnsupportedTokenizer(f"tag_text: normaliser {step.get('type')} not supported")
    special = {t["content"] for t in spec.get("added_tokens", []) if t.get("special")}
    unk = model.get("unk_id")
    ids = {piece: i for i, (piece, _) in enumerate(model["vocab"])}
    out = bytearray()
    for i, (piece, score) in enumerate(model["vocab"]):
        kind = (_UNKNOWN if i == unk else _CONTROL if piece in ("<s>", "</s>", "<pad>")
                else _USER_DEFINED if piece in special else _NORMAL)
        out += _pb_bytes(1, _pb_bytes(1, piece.encode()) + _pb_float(2, score)
                         + _pb_int(3, kind))
    trainer = _pb_int(3, 1) + _pb_int(4, len(model["vocab"]))  # model_type UNIGRAM
    for field, piece in ((41, "<s>"), (42, "</s>"), (43, "<pad>")):
        if piece in ids:
            trainer += _pb_int(field, ids[piece])
    out += _pb_bytes(2, trainer + (_pb_int(40, unk) if unk is not None else b""))
    name = b"nmt_nfkc" if charsmap else b"identity"
    # add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces: SentencePiece's own XLM-R
    # settings. Known differences from HF (8 of 154,035 distinct WikiANN test words in 12
    # languages, scripts/check_tag_text_ids.py): a format mark that normalises to a space at a
    # word's end (U+200E) keeps a "▁" piece in HF only, and a few Unigram ties split differently.
    out += _pb_bytes(3, _pb_bytes(1, name) + _pb_bytes(2, charsmap) + _pb_int(3, 1)
                     + _pb_int(4, 1) + _pb_int(5, 1))
    return bytes(out)


# SentencePiece piece types and the three protobuf wire encodings the model needs.
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED = 1, 2, 3, 4


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_bytes(field: int, data: bytes) -> bytes:
    return _pb_varint(field << 3 | 2) + _pb_varint(len(data)) + data


def _pb_int(field: int, value: int) -> bytes:
    return _pb_varint(field << 3) + _pb_varint(value)


def _pb_float(field: int, value: float) -> bytes:
    return _pb_varint(field << 3 | 5) + struct.pack("<f", value)


def make_tokenizer(settings: dict):
    """The tensorflow-text tokenizer for `tokenizer_settings(...)` (or `wordpiece_settings`)."""
    import tensorflow_text as tft

    if settings.get("kind") == "sentencepiece":
        return tft.SentencepieceTokenizer(model=settings["model"], out_type=tf.int32)
    return tft.FastBertTokenizer(
        vocab=settings["vocab"],
        suffix_indicator=settings["suffix_indicator"],
        max_bytes_per_word=settings["max_bytes_per_word"],
        token_out_type=tf.int64,
        unknown_token=settings["unknown_token"],
        lower_case_nfd_strip_accents=settings["lower_case"],
    )


def split_words(sentences: tf.Tensor) -> tf.RaggedTensor:
    """`[B]` strings -> `[B, (W)]` words, split like Python's `str.split()`."""
    return tf.strings.split(tf.strings.regex_replace(sentences, _WHITESPACE, " "))


def word_pieces(tokenizer, words: tf.Tensor, unk_id: int) -> tf.RaggedTensor:
    """`[N]` words -> `[N, (P)]` int32 sub-word ids; a word with no sub-word gets `[unk_id]`."""
    if not isinstance(tokenizer, _sentencepiece_class()):
        # BertNormalizer(clean_text) drops control and format characters (U+200B, ...) and
        # U+FFFD; tensorflow-text does it only when lower-casing, and splits words otherwise.
        words = tf.strings.regex_replace(words, _DROPPED, "")
    pieces = tokenizer.tokenize(words)
    counts = tf.maximum(pieces.row_lengths(), 1)
    # Pad one column of unk so that rows that were empty read [unk] at length 1.
    dense = tf.pad(pieces.to_tensor(default_value=unk_id), [[0, 0], [0, 1]],
                   constant_values=unk_id)
    return tf.RaggedTensor.from_tensor(tf.cast(dense, tf.int32), lengths=counts)


def _sentencepiece_class():
    import tensorflow_text as tft

    return tft.SentencepieceTokenizer


def build_inputs(sentences: tf.Tensor, tokenizer, ids: dict, max_seq_length: int) -> dict:
    """Model inputs for a batch of sentences, one window per sentence.

    Args:
        sentences: `[B]` strings.
        tokenizer: from `make_tokenizer`.
        ids: `cls`, `sep`, `pad` and `unk` token ids.
        max_seq_length: positions per window, the two special tokens included.

    Returns:
        dict with `input_ids`, `attention_mask` (int32 `[B, T]`), `words` (string `[B, W]`,
        "" padded), `first` (int32 `[B, W]`: position of each word's first sub-word, 0 when not
        tagged) and `tagged` (bool `[B, W]`: real words inside the window).
    """
    words = split_words(sentences)
    pieces = word_pieces(tokenizer, words.flat_values, ids["unk"])
    n = tf.cast(pieces.row_lengths(), tf.int32)  # [N] sub-words per word
    total = tf.cumsum(n, exclusive=True)  # [N] start of each word among all sub-words
    first_word = words.row_starts()
    sentence_start = tf.gather(tf.concat([total, [tf.reduce_sum(n)]], 0), first_word)
    start = total - tf.repeat(sentence_start, words.row_lengths())  # [N] start in its sentence
    # Whole words only, as features.make_windows cuts windows.
    keep = start + n <= max_seq_length - 2
    keep_piece = tf.repeat(keep, n)
    rows = tf.repeat(words.value_rowids(), tf.cast(n, tf.int64))
    batch = tf.shape(sentences, out_type=tf.int64)[0]
    body = tf.RaggedTensor.from_value_rowids(
        tf.boolean_mask(pieces.flat_values, keep_piece), tf.boolean_mask(rows, keep_piece),
        nrows=batch)
    ones = tf.ones([batch, 1], tf.int32)
    window = tf.concat([tf.RaggedTensor.from_tensor(ones * ids["cls"]), body,
                        tf.RaggedTensor.from_tensor(ones * ids["sep"])], axis=1)
    return {
        "input_ids": window.to_tensor(default_value=ids["pad"]),
        "attention_mask": tf.ones_like(window).to_tensor(default_value=0),
        "words": words.to_tensor(default_value=""),
        "first": words.with_flat_values(tf.where(keep, start + 1, 0)).to_tensor(default_value=0),
        "tagged": words.with_flat_values(keep).to_tensor(default_value=False),
    }


def word_outputs(inputs: dict, label_ids: tf.Tensor, probabilities: tf.Tensor,
                 labels: tf.Tensor) -> dict:
    """Word-level `words`, `tags` (string `[B, W]`) and `scores` (float32 `[B, W]`).

    A word's tag is its first sub-word's label and its score that label's probability; words
    outside the window (and padding) get "" and 0.
    """
    word_ids = tf.gather(label_ids, inputs["first"], batch_dims=1)
    word_probs = tf.gather(probabilities, inputs["first"], batch_dims=1)  # [B, W, K]
    scores = tf.gather(word_probs, word_ids, batch_dims=2)
    tagged = inputs["tagged"]
    return {
        "words": inputs["words"],
        "tags": tf.where(tagged, tf.gather(labels, word_ids), ""),
        "scores": tf.where(tagged, scores, 0.0),
    }

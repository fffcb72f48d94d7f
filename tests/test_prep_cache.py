"""Preparation cache: a second preparation of the same file, tokenizer and settings reads the
cache; any change to them prepares again; a damaged entry is replaced."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from prefopt.data.io import load_rows
from prefopt.data.prep_cache import file_sha256, prepare_pairs, tokenizer_fingerprint
from prefopt.data.tokenize import TokenizationSettings, tokenize_pairs
from prefopt.testing import synthetic_pairs, write_pairs


@pytest.fixture
def tokenizer(tiny_model: Path):
    return AutoTokenizer.from_pretrained(tiny_model)


class Reader:
    """``read_rows`` for prepare_pairs that counts how often the file is actually read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return list(load_rows(str(self.path)))


def _prepare(path: Path, tokenizer, reader: Reader, root: Path, settings=None, **kwargs):
    return prepare_pairs(
        str(path),
        "train",
        tokenizer,
        settings or TokenizationSettings(),
        ["h_w", "h_l"],
        reader,
        validation="test",
        root=root,
        **kwargs,
    )


def test_second_preparation_reads_the_cache(tmp_path: Path, tokenizer) -> None:
    rows = synthetic_pairs(40, seed=1, with_h_flags=True)
    rows[5]["prompt"] = "word " * 600  # truncated prompt, counted in the report
    path = write_pairs(tmp_path / "data.jsonl", rows)
    reader = Reader(path)
    first, report, hit = _prepare(path, tokenizer, reader, tmp_path / "cache")
    assert (hit, reader.calls) == (False, 1)
    second, cached_report, hit = _prepare(path, tokenizer, reader, tmp_path / "cache")
    assert (hit, reader.calls) == (True, 1)  # no second read
    assert second == first  # ids, extras and order
    assert vars(cached_report) == vars(report) and report.prompts_truncated == 1
    expected, _ = tokenize_pairs(
        enumerate(rows, 1), tokenizer, TokenizationSettings(), ["h_w", "h_l"]
    )
    assert first == expected  # the cache adds nothing to tokenization itself
    assert len(list((tmp_path / "cache" / "prep").glob("*.npz"))) == 1


def test_changes_prepare_again(tmp_path: Path, tokenizer) -> None:
    path = write_pairs(tmp_path / "data.jsonl", synthetic_pairs(10, seed=2, with_h_flags=True))
    reader = Reader(path)
    root = tmp_path / "cache"
    _prepare(path, tokenizer, reader, root)
    _prepare(path, tokenizer, reader, root, settings=TokenizationSettings(64, 32))
    assert reader.calls == 2
    other = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    other.chat_template = "{{ messages }}"
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tokenizer)
    _prepare(path, other, reader, root)
    assert reader.calls == 3
    write_pairs(path, synthetic_pairs(10, seed=3, with_h_flags=True))  # new content, same name
    pairs, _, hit = _prepare(path, tokenizer, reader, root)
    assert not hit and reader.calls == 4
    _, _, hit = _prepare(path, tokenizer, reader, root, use_cache=False)
    assert not hit and reader.calls == 5


def test_damaged_entry_is_replaced(tmp_path: Path, tokenizer, caplog) -> None:
    path = write_pairs(tmp_path / "data.jsonl", synthetic_pairs(12, seed=4, with_h_flags=True))
    reader = Reader(path)
    root = tmp_path / "cache"
    first, _, _ = _prepare(path, tokenizer, reader, root)
    (entry,) = (root / "prep").glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="prefopt"):
        again, _, hit = _prepare(path, tokenizer, reader, root)
    assert not hit and again == first and "unusable" in caplog.text
    _, _, hit = _prepare(path, tokenizer, reader, root)
    assert hit  # rewritten


def test_file_hash_is_memoised_and_follows_changes(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"a" * 10_000)
    root = tmp_path / "cache"
    assert file_sha256(path, root) == hashlib.sha256(b"a" * 10_000).hexdigest()
    assert (root / "file-hashes.json").is_file()
    assert file_sha256(path, root) == hashlib.sha256(b"a" * 10_000).hexdigest()
    path.write_bytes(b"b" * 10_001)
    assert file_sha256(path, root) == hashlib.sha256(b"b" * 10_001).hexdigest()


def test_bad_records_are_never_cached(tmp_path: Path, tokenizer) -> None:
    from prefopt.errors import DataError

    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "q", "chosen": "a"}\n', encoding="utf-8")

    def strict_reader():
        from prefopt.data.records import validate_record

        rows = list(load_rows(str(path)))
        for line, row in rows:
            validate_record(row, path, line)
        return rows

    for _ in range(2):
        with pytest.raises(DataError, match="rejected"):
            prepare_pairs(
                str(path),
                "train",
                tokenizer,
                TokenizationSettings(),
                [],
                strict_reader,
                root=tmp_path / "c",
            )
    assert not list((tmp_path / "c").glob("prep/*.npz"))


def test_direct_rust_encoding_equals_the_tokenizer_call(tokenizer) -> None:
    from prefopt.data.tokenize import _encode, _plain_backend

    assert _plain_backend(tokenizer) is not None  # the fast path is taken for this tokenizer
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Where does the zora live?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    texts = ["Question: hi", "The zora is red.</s>", chat, "  two  spaces ", "ünïcode ✓", ""]
    for special in (True, False):
        expected = [list(ids) for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]]
        assert _encode(tokenizer, texts, special) == expected
    tokenizer.backend_tokenizer.enable_truncation(4)  # state the plain call would reset
    try:
        assert _plain_backend(tokenizer) is None
    finally:
        tokenizer.backend_tokenizer.no_truncation()

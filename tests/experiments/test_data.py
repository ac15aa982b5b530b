import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments.config import Config, DataConfig, apply_overrides
from experiments.data import DataError, TokenData, TokenSource, Windows, read_texts, token_source
from experiments.text_builder import LocalText, LocalTextConfig, records, strip_markdown
from experiments.tokenizers import ByteTokenizer, TiktokenTokenizer


def _data(data_dir, **overrides) -> DataConfig:
    settings = {"data.data_dir": data_dir, **{f"data.{k}": v for k, v in overrides.items()}}
    return apply_overrides(Config(), settings).data


def test_strip_markdown_keeps_words():
    text = "# Hamlet\n\n**BERNARDO**  \nWho's there?\n\n_Enter HORATIO_\nsnake_case stays"
    assert (
        strip_markdown(text)
        == "Hamlet\n\nBERNARDO\nWho's there?\n\nEnter HORATIO\nsnake_case stays"
    )


def test_records_are_whole_paragraphs():
    paragraphs = [f"p{i} " + "x" * 30 for i in range(10)]
    out = records("\n\n".join(paragraphs), record_chars=70)
    assert "".join(out).split() == " ".join(paragraphs).split()
    assert all(r.endswith("\n\n") for r in out) and len(out) == 4  # 3 + 3 + 3 + 1


def test_default_corpus_is_shakespeare_with_a_fixed_split(data_dir):
    train = read_texts(_data(data_dir), "train")
    validation = read_texts(_data(data_dir), "validation")
    text = "".join(train)
    assert len(text) > 4_000_000 and "To be, or not to be" in text + "".join(validation)
    assert "**" not in text and "### " not in text
    assert 0.03 < len(validation) / (len(train) + len(validation)) < 0.07
    assert not set(train) & set(validation)


def test_a_corpus_built_first_by_a_run_beside_this_one_is_read(data_dir, tmp_path, monkeypatch):
    # Two runs started together both build the default corpus; TFDS refuses the
    # second one's final rename because the first one's version folder is there.
    def built_beside(self):
        shutil.copytree(Path(data_dir) / "local_text", tmp_path / "local_text")
        raise FileExistsError("Cannot rename incomplete.X_1.0.0: 1.0.0 already exists.")

    monkeypatch.setattr(LocalText, "download_and_prepare", built_beside)
    assert read_texts(_data(str(tmp_path)), "validation") == read_texts(
        _data(data_dir), "validation"
    )


def test_local_text_builder_on_any_folder(tmp_path, capfd):
    root = tmp_path / "texts"
    root.mkdir()
    for i in range(30):
        (root / f"doc{i:02d}.txt").write_text(f"document {i}\n\n" + "words " * 100)
    config = LocalTextConfig(name="mine", root=str(root), record_chars=200)
    builder = LocalText(config=config, data_dir=str(tmp_path / "tfds"), file_format="array_record")
    builder.download_and_prepare()
    out, err = capfd.readouterr()
    assert "Download" not in out + err  # TFDS's "Downloading and preparing" alarmed users
    assert "from local files into" in err and "nothing is downloaded" in err
    cfg = _data(str(tmp_path / "tfds"), dataset="local_text/mine")
    texts = read_texts(cfg, "train") + read_texts(cfg, "validation")
    assert sorted(t.split("\n")[0] for t in texts if t.startswith("document")) == sorted(
        f"document {i}" for i in range(30)
    )


def test_missing_data_set_fails_fast_and_clearly(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataError, match="'lm1b' is not prepared under .*nothing is downloaded"):
        read_texts(_data(str(tmp_path), dataset="lm1b"), "train")
    assert time.perf_counter() - start < 1.0


def test_mock_tfds_data_set(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        data = TokenData(_data(str(tmp_path), dataset="lm1b", microbatch_size=4), seq_len=8)
    assert data.microbatch(0).shape == (4, 9) and data.train.count >= 4


def test_windows_are_a_seeded_permutation_per_epoch():
    tokens = np.arange(41)
    w = Windows(tokens, length=5, seed=3)  # 10 windows of 5 tokens, overlapping by one
    first = w.rows(0, 10)
    assert sorted(first[:, 0].tolist()) == list(range(0, 40, 4))
    assert np.array_equal(first[:, 1:], first[:, :-1] + 1)
    second = w.rows(10, 10)
    assert not np.array_equal(first, second) and sorted(second[:, 0].tolist()) == list(
        range(0, 40, 4)
    )
    assert np.array_equal(w.rows(7, 6), np.concatenate([first[7:], second[:3]]))
    assert not np.array_equal(Windows(tokens, 5, seed=4).rows(0, 10), first)


def test_microbatches_are_addressed_by_index_and_split_by_rows(data_dir):
    data = TokenData(_data(data_dir, microbatch_size=8), seq_len=32)
    again = TokenData(_data(data_dir, microbatch_size=8), seq_len=32)
    assert np.array_equal(data.microbatch(5), again.microbatch(5))
    assert not np.array_equal(data.microbatch(5), data.microbatch(6))
    halves = [data.microbatch(5, slice(0, 4)), data.microbatch(5, slice(4, 8))]
    assert np.array_equal(np.concatenate(halves), data.microbatch(5))
    assert data.microbatch(5).dtype == np.int32 and data.microbatch(5).shape == (8, 33)
    other = TokenData(_data(data_dir, microbatch_size=8, seed=1), seq_len=32)
    assert not np.array_equal(other.microbatch(5), data.microbatch(5))
    evals = data.eval_batches()
    assert len(evals) == data.config.eval_batches and evals[0].shape == (8, 33)


def test_eval_sequences_are_one_set_spread_over_the_split_whatever_the_microbatch(data_dir):
    """data.eval_sequences: the same sequences for every microbatch size, spread
    over the validation split (not one contiguous passage from its start)."""
    sets = []
    for size in (4, 8, 16):
        data = TokenData(_data(data_dir, microbatch_size=size, eval_sequences=16), seq_len=32)
        batches = data.eval_batches()
        assert len(batches) == 16 // size and batches[0].shape == (size, 33)
        sets.append(np.concatenate(batches))
    assert all(np.array_equal(sets[0], other) for other in sets[1:])
    count = data.validation.count
    assert count > 16
    assert np.array_equal(sets[0][-1], data.validation.window(15 * count // 16))
    assert not np.array_equal(sets[0], data.validation.sequential(16))


def test_byte_tokenizer_round_trips():
    tok = ByteTokenizer()
    text = "Ay, marry, is't — ç"
    assert tok.decode(tok.encode(text)) == text and tok.encode(text).max() < 256


def test_tiktoken_tokenizer_from_a_local_file(tmp_path):
    import base64

    ranks = [bytes([b]) for b in range(256)] + [b"th", b"the", b" the"]
    path = tmp_path / "tiny.tiktoken"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(ranks)))
    tok = TiktokenTokenizer(str(path))
    ids = tok.encode("the theme")
    assert tok.vocab_size == 260 and ids.tolist()[:2] == [257, 258]
    assert tok.decode(ids) == "the theme"
    with pytest.raises(FileNotFoundError, match="encoding_file"):
        TiktokenTokenizer(str(tmp_path / "missing.tiktoken"))


def test_short_split_is_an_error(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=2), pytest.raises(DataError, match="fewer than one"):
        TokenData(_data(str(tmp_path), dataset="lm1b"), seq_len=4096)


def test_train_tokens_keeps_a_prefix_of_the_train_split_only(data_dir):
    full = TokenData(_data(data_dir, microbatch_size=4), seq_len=32)
    small = TokenData(_data(data_dir, microbatch_size=4, train_tokens=33 * 10 + 1), seq_len=32)
    assert small.train.count == 10 and full.train.count > 1000
    assert np.array_equal(small.train.tokens, full.train.tokens[: 33 * 10 + 1])
    # Every window of an epoch is seen once, then the next epoch starts.
    first_epoch = np.concatenate(
        [small.microbatch(i) for i in range(2)] + [small.microbatch(2)[:2]]
    )
    assert sorted(map(bytes, first_epoch)) == sorted(
        bytes(small.train.window(j)) for j in range(10)
    )
    assert np.array_equal(small.validation.tokens, full.validation.tokens)
    with pytest.raises(ValueError, match="data.train_tokens must be >= 0"):
        _data(data_dir, train_tokens=-1)


def test_second_eval_corpus_from_the_python_stdlib_or_a_folder(tmp_path, data_dir):
    data = TokenData(_data(data_dir, microbatch_size=4, second_eval="python-stdlib"), seq_len=32)
    batches = data.eval_batches(second=True)
    assert len(batches) == data.config.eval_batches and batches[0].shape == (4, 33)
    text = bytes(np.concatenate([b[:, :-1].ravel() for b in batches]).astype(np.uint8))
    assert b"import" in text or b"def " in text  # Python source, not Shakespeare
    assert not np.array_equal(batches[0], data.eval_batches()[0])
    (tmp_path / "b.txt").write_text("beta " * 400)
    (tmp_path / "a.txt").write_text("alpha " * 400)
    folder = TokenData(_data(data_dir, microbatch_size=4, second_eval=str(tmp_path)), seq_len=32)
    first = bytes(folder.eval_batches(second=True)[0][0].astype(np.uint8))
    assert first.startswith(b"alpha alpha")  # files in sorted order
    with pytest.raises(DataError, match="data.second_eval must be 'python-stdlib' or a folder"):
        TokenData(_data(data_dir, second_eval=str(tmp_path / "missing")), seq_len=32)


def _token_folder(folder, train, validation, kind="npy"):
    folder.mkdir()
    if kind == "npy":
        np.save(folder / "train.npy", train)
        np.save(folder / "validation.npy", validation)
    else:  # nanoGPT's layout: raw uint16 train.bin and val.bin
        train.astype(np.uint16).tofile(folder / "train.bin")
        validation.astype(np.uint16).tofile(folder / "val.bin")
    return f"tokens:{folder}"


def test_token_arrays_need_no_tfds(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # importing it fails
    rng = np.random.default_rng(0)
    train, validation = rng.integers(0, 300, 5000), rng.integers(0, 300, 700)
    train[7] = 299
    for kind in ("npy", "bin"):
        dataset = _token_folder(tmp_path / kind, train, validation, kind)
        data = TokenData(_data(str(tmp_path), dataset=dataset, microbatch_size=4), seq_len=16)
        assert data.vocab_size == 300  # the largest token + 1
        expected = Windows(train, 17, seed=0).rows(8, 4)
        np.testing.assert_array_equal(data.microbatch(2), expected)
        np.testing.assert_array_equal(
            data.eval_batches()[0], Windows(validation, 17, 0).sequential(4)
        )
    # The same arrays from memory, under the same data seed, give the same microbatches.
    memory = TokenSource(train, validation, vocab_size=512)
    from_memory = TokenData(_data(str(tmp_path), microbatch_size=4), seq_len=16, source=memory)
    assert from_memory.vocab_size == 512
    np.testing.assert_array_equal(from_memory.microbatch(2), data.microbatch(2))


def test_token_array_errors_name_the_files_and_tokens(tmp_path):
    with pytest.raises(DataError, match=r"none of .*train\.npy.*train\.bin.* exists"):
        token_source(_data(str(tmp_path), dataset=f"tokens:{tmp_path / 'missing'}"))
    dataset = _token_folder(tmp_path / "t", np.arange(100), np.arange(50))
    with pytest.raises(DataError, match=r"tokens in \[0, 99\], outside the vocabulary \[0, 64\)"):
        token_source(_data(str(tmp_path), dataset=dataset, vocab_size=64))
    with pytest.raises(DataError, match="1-D integer token array"):
        TokenSource(np.zeros((2, 3), np.int32), np.zeros(4, np.int32), 8)
    with pytest.raises(ValueError, match="data.vocab_size must be >= 0, got -1"):
        _data(str(tmp_path), vocab_size=-1)


def test_python_source_is_byte_tokens_of_this_machine(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    source = token_source(_data(str(tmp_path), dataset="python-source", corpus_bytes=300_000))
    assert source.vocab_size == 256 and source.train.dtype == np.uint8
    assert source.train.size + source.validation.size >= 300_000 and source.validation.size
    with pytest.raises(DataError, match="use data.tokenizer=bytes"):
        token_source(_data(str(tmp_path), dataset="python-source", tokenizer="tiktoken"))

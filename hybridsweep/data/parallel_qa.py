"""The one in-memory shape every retrieval corpus takes: parallel questions and candidate sentences.

A *parallel QA corpus* holds questions in several languages and candidate sentences in several
languages. Questions that share an ``id`` are translations of each other; a candidate is relevant
to a question when the question's ``id`` is among the candidate's ``answer_ids``. This is the
LAReQA structure (XQuAD-R, MLQA-R), and the embedded synthetic generator produces it too, so the
training-pair builder, the scale selection and the evaluation serve both.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import datasets
import numpy as np


@dataclass(frozen=True)
class Question:
    id: str
    lang: str
    text: str


@dataclass(frozen=True)
class Candidate:
    lang: str
    text: str
    answer_ids: tuple[str, ...]
    """Ids of the questions this sentence answers (empty for a distractor)."""


@dataclass
class ParallelQA:
    """A named parallel QA corpus: questions plus the candidate sentences that answer them."""

    name: str
    questions: list[Question]
    candidates: list[Candidate]
    stats: dict[str, int] = field(default_factory=dict)
    """Construction counts worth reporting (for LAReQA: answers dropped across sentence breaks)."""

    @property
    def languages(self) -> list[str]:
        return sorted({q.lang for q in self.questions} | {c.lang for c in self.candidates})

    @property
    def question_ids(self) -> list[str]:
        """Distinct question ids in first-seen order (deterministic for a given corpus)."""
        return list(dict.fromkeys(q.id for q in self.questions))

    def texts(self) -> list[str]:
        """Every question and candidate text (e.g. to train a tokenizer on)."""
        return [q.text for q in self.questions] + [c.text for c in self.candidates]

    def select_ids(self, keep: set[str]) -> ParallelQA:
        """The sub-corpus of the questions in ``keep``; candidates are kept only as answers of them."""
        questions = [q for q in self.questions if q.id in keep]
        candidates = [
            Candidate(c.lang, c.text, tuple(i for i in c.answer_ids if i in keep))
            for c in self.candidates
        ]
        return ParallelQA(self.name, questions, [c for c in candidates if c.answer_ids], self.stats)


def texts_digest(header: str, texts: Iterable[str]) -> str:
    """sha256 (hex) of ``header`` and then each text NUL-terminated: the cache key of whatever is
    built from a corpus's texts (a trained tokenizer, a pruned vocabulary)."""
    digest = hashlib.sha256(header.encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def scale_count(total: int, scale: float) -> int:
    """How many of ``total`` items ``data.scale`` selects: a fraction in (0, 1] or a whole count."""
    if scale <= 0:
        raise ValueError(f"data.scale must be > 0, got {scale}")
    if scale > 1 and scale != int(scale):
        raise ValueError(f"data.scale > 1 is a count of question ids and must be whole, got {scale}")
    count = round(scale * total) if scale <= 1 else int(scale)
    if count > total:
        raise ValueError(f"data.scale={scale} asks for {count} question ids, the corpus has {total}")
    return max(count, 1)


def split_question_ids(ids: list[str], scale: float, seed: int, validation: float = 0) -> tuple[list[str], list[str]]:
    """(training ids, validation ids) from one fixed shuffle of the sorted ``ids``.

    The validation ids are the shuffle's first ``validation`` (a fraction in [0, 1) of all ids, or
    a whole count >= 1; 0: none); the training ids are the first ``scale`` of the rest (a
    fraction in (0, 1] of the rest, or a count). The shuffle depends only on ``seed`` and the
    ids, never on the scale, so the validation ids are the same at every scale, never trained on,
    and the training ids at scale ``s`` are a prefix (and so a subset) of those at any ``s' > s``.
    """
    ordered = sorted(ids)
    if validation < 0 or (validation >= 1 and validation != int(validation)):
        raise ValueError(f"data.validation={validation} is not allowed: expected a fraction in [0, 1) or a whole count")
    held_out = round(validation * len(ordered)) if validation < 1 else int(validation)
    if held_out >= len(ordered):
        raise ValueError(f"data.validation={validation} holds out {held_out} of the {len(ordered)} question ids: none left to train on")
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    shuffled = [ordered[i] for i in permutation]
    rest = shuffled[held_out:]
    return rest[:scale_count(len(rest), scale)], shuffled[:held_out]


def training_pairs(corpus: ParallelQA) -> datasets.Dataset:
    """All (question, answer sentence) pairs of a corpus, as an Arrow-backed ``datasets.Dataset``.

    For a question id with questions in languages Q and answer sentences in languages P, every
    (q in Q, p in P) combination is one pair; it is *monolingual* when the two languages are equal
    and *cross-lingual* otherwise. Distractor candidates (no answer id) never form a pair.
    """
    answers: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in corpus.candidates:
        for qid in candidate.answer_ids:
            answers[qid].append(candidate)
    rows: dict[str, list] = {"qid": [], "q_lang": [], "p_lang": [], "question": [], "passage": []}
    for question in corpus.questions:
        for candidate in answers.get(question.id, ()):
            rows["qid"].append(question.id)
            rows["q_lang"].append(question.lang)
            rows["p_lang"].append(candidate.lang)
            rows["question"].append(question.text)
            rows["passage"].append(candidate.text)
    pairs = datasets.Dataset.from_dict(rows)
    return pairs.add_column("is_mono", [q == p for q, p in zip(rows["q_lang"], rows["p_lang"])])


def ensure_disjoint(train: ParallelQA, evaluation: ParallelQA) -> None:
    """Refuse a zero-shot evaluation on data the model was trained on."""
    if train.name == evaluation.name:
        raise ValueError(f"refusing to evaluate on the training corpus {train.name!r}: zero-shot needs another set")
    shared = set(train.question_ids) & set(evaluation.question_ids)
    if shared:
        raise ValueError(
            f"the evaluation corpus {evaluation.name!r} shares {len(shared)} question ids with the "
            f"training corpus {train.name!r} (e.g. {sorted(shared)[0]!r})"
        )

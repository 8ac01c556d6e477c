"""XQuAD-R and MLQA-R (LAReQA, Roy et al. 2020) as :class:`ParallelQA` corpora.

Each language file is SQuAD v1 JSON whose paragraphs also hold ``sentences`` and
``sentence_breaks`` (``[start, end)`` character spans of the context). Construction, as LAReQA:

* every sentence of every context is one candidate in the file's language (a context's sentences
  are taken position by position, so the counts equal LAReQA's published table);
* an answer selects the sentence whose span holds ``answer_start``; an answer that runs past that
  sentence's end crosses a break and is dropped (counted in ``stats``);
* a question's relevant candidates are the selected sentences of every question with its ``id``,
  in every language: the same id in two files is the same question, translated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hybridsweep.data.download import resolve_files
from hybridsweep.data.parallel_qa import Candidate, ParallelQA, Question

LAREQA_REPOSITORY = "https://raw.githubusercontent.com/google-research-datasets/lareqa"
LAREQA_URLS = {
    "xquad-r": f"{LAREQA_REPOSITORY}/master/xquad-r",
    # The repository's commit b91469b deleted mlqa-r/ from master; the files live on at this commit.
    "mlqa-r": f"{LAREQA_REPOSITORY}/354d67d1cd066854cdfbf5ad0e6105528976141d/mlqa-r",
}
LANGUAGES = {
    "xquad-r": ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"),
    "mlqa-r": ("ar", "de", "en", "es", "hi", "vi", "zh"),
}


def _answer_sentence(paragraph: dict, answer: dict, where: str) -> int | None:
    """Index of the sentence holding ``answer``; None when the answer crosses a sentence break."""
    start = answer["answer_start"]
    end = start + len(answer["text"])
    for index, (first, last) in enumerate(paragraph["sentence_breaks"]):
        if first <= start < last:
            return index if end <= last else None
    raise ValueError(f"{where}: answer_start={start} lies in no sentence_breaks span {paragraph['sentence_breaks']}")


def _read_language(path: Path, lang: str, questions: list[Question], sentences: list[tuple[str, str, set]]) -> int:
    """Append one file's questions and sentences; returns the number of answers dropped."""
    try:
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError) as error:
        raise ValueError(f"{path}: not LAReQA JSON (expected {{'data': [articles]}}): {error}") from None
    dropped = 0
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article["paragraphs"]):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            missing = {"sentences", "sentence_breaks", "qas"} - set(paragraph)
            if missing:
                raise ValueError(f"{where} lacks {sorted(missing)}: this is SQuAD without LAReQA sentence breaks")
            if len(paragraph["sentences"]) != len(paragraph["sentence_breaks"]):
                raise ValueError(f"{where}: {len(paragraph['sentences'])} sentences but "
                                 f"{len(paragraph['sentence_breaks'])} sentence_breaks")
            first = len(sentences)
            sentences.extend((lang, text, set()) for text in paragraph["sentences"])
            for qa in paragraph["qas"]:
                questions.append(Question(qa["id"], lang, qa["question"]))
                for answer in qa["answers"]:
                    index = _answer_sentence(paragraph, answer, f"{where} question {qa['id']}")
                    if index is None:
                        dropped += 1
                    else:
                        sentences[first + index][2].add(qa["id"])
    return dropped


def load_lareqa(
    dataset: str,
    languages: list[str] | None = None,
    root: str | os.PathLike | None = None,
    download_dir: str | os.PathLike = "~/.cache/hybridsweep/downloads",
    base_url: str | None = None,
) -> ParallelQA:
    """Load ``xquad-r`` or ``mlqa-r`` from ``root/<dataset>/<lang>.json``, or else from the LAReQA repository.

    ``root`` is a folder holding the benchmark folders (``xquad-r/``, ``mlqa-r/``); ``None``
    downloads the files once into ``download_dir`` from ``base_url`` (default: the dataset's
    folder in :data:`LAREQA_URLS`).

    ``languages`` restricts the corpus (default: all of the dataset's). ``stats`` holds, per
    language and in total, the answers dropped for crossing a sentence break.
    """
    if dataset not in LANGUAGES:
        raise ValueError(f"dataset must be one of {sorted(LANGUAGES)}, got {dataset!r}")
    languages = list(languages or LANGUAGES[dataset])
    unknown = sorted(set(languages) - set(LANGUAGES[dataset]))
    if unknown:
        raise ValueError(f"{dataset} has no languages {unknown}; available: {list(LANGUAGES[dataset])}")
    local_dir = None if root is None else Path(root).expanduser() / dataset
    files = resolve_files([f"{lang}.json" for lang in languages], local_dir, base_url or LAREQA_URLS[dataset], download_dir, dataset)
    questions: list[Question] = []
    sentences: list[tuple[str, str, set]] = []
    stats: dict[str, int] = {}
    for lang in languages:
        stats[f"dropped_cross_break/{lang}"] = _read_language(files[f"{lang}.json"], lang, questions, sentences)
    stats["dropped_cross_break"] = sum(stats.values())
    candidates = [Candidate(lang, text, tuple(sorted(ids))) for lang, text, ids in sentences]
    return ParallelQA(dataset, questions, candidates, stats)

"""XQuAD-R / MLQA-R loading: published candidate counts, relevance construction, offline errors."""

from __future__ import annotations

import json
import re
import socket
from collections import Counter

import pytest

from hybridsweep.data.download import DataUnavailableError, resolve_files
from hybridsweep.data.lareqa import load_lareqa
from hybridsweep.data.parallel_qa import ensure_disjoint, training_pairs


def published_table(readme: str) -> dict[str, dict[str, tuple[int, int]]]:
    """The per-language (questions, candidates) table of the data README."""
    table: dict[str, dict[str, tuple[int, int]]] = {"xquad-r": {}, "mlqa-r": {}}
    for lang, xq, xc, mq, mc in re.findall(r"^\| (\w\w) \| (\d+) \| (\d+) \| (\d+|–) \| (\d+|–) \|$", readme, re.M):
        table["xquad-r"][lang] = (int(xq), int(xc))
        if mq != "–":
            table["mlqa-r"][lang] = (int(mq), int(mc))
    return table


@pytest.mark.parametrize("dataset", ["xquad-r", "mlqa-r"])
def test_counts_equal_the_published_table(shared_data_dir, dataset):
    expected = published_table((shared_data_dir / "README.md").read_text())[dataset]
    assert len(expected) == {"xquad-r": 11, "mlqa-r": 7}[dataset]
    corpus = load_lareqa(dataset, root=shared_data_dir)
    questions = Counter(q.lang for q in corpus.questions)
    candidates = Counter(c.lang for c in corpus.candidates)
    assert {lang: (questions[lang], candidates[lang]) for lang in expected} == expected
    assert corpus.languages == sorted(expected)


def test_mlqa_r_parallel_ids_and_answers_per_question(shared_data_dir):
    """README: 1,148 parallel ids, 4,199 questions, each with 2-4 correct answers across languages."""
    corpus = load_lareqa("mlqa-r", root=shared_data_dir)
    assert len(corpus.question_ids) == 1148 and len(corpus.questions) == 4199
    answers = Counter(i for c in corpus.candidates for i in c.answer_ids)
    # An id keeps fewer answers than languages only when an answer crossed a sentence break.
    assert min(answers.values()) >= 1 and max(answers.values()) <= 4
    assert sum(1 for n in answers.values() if n >= 2) / len(answers) > 0.97


def _write(path, paragraphs):
    path.write_text(json.dumps({"version": "1", "data": [{"title": "t", "paragraphs": paragraphs}]}))


def test_relevance_and_dropped_answers_by_hand(tmp_path):
    folder = tmp_path / "xquad-r"
    folder.mkdir()
    en_context = "Alpha is first. Beta is second. Gamma spans. Here."
    _write(folder / "en.json", [{
        "context": en_context,
        "sentences": ["Alpha is first.", "Beta is second.", "Gamma spans.", "Here."],
        "sentence_breaks": [[0, 15], [16, 31], [32, 44], [45, 50]],
        "qas": [
            {"id": "q1", "question": "Which is second?", "answers": [{"text": "Beta", "answer_start": 16}]},
            # "spans. Here" runs from sentence 3 into sentence 4: dropped.
            {"id": "q2", "question": "What spans?", "answers": [{"text": "spans. Here", "answer_start": 38}]},
        ],
    }])
    _write(folder / "de.json", [{
        "context": "Beta ist zweiter. Alpha ist erster.",
        "sentences": ["Beta ist zweiter.", "Alpha ist erster."],
        "sentence_breaks": [[0, 17], [18, 35]],
        "qas": [
            {"id": "q1", "question": "Was ist zweiter?", "answers": [{"text": "Beta", "answer_start": 0}]},
            {"id": "q2", "question": "Was spannt?", "answers": [{"text": "Alpha", "answer_start": 18}]},
        ],
    }])
    corpus = load_lareqa("xquad-r", languages=["en", "de"], root=tmp_path)
    by_text = {c.text: c.answer_ids for c in corpus.candidates}
    assert by_text == {"Alpha is first.": (), "Beta is second.": ("q1",), "Gamma spans.": (), "Here.": (),
                       "Beta ist zweiter.": ("q1",), "Alpha ist erster.": ("q2",)}
    assert corpus.stats["dropped_cross_break/en"] == 1 and corpus.stats["dropped_cross_break"] == 1
    pairs = training_pairs(corpus).to_pandas()
    # q1: en and de questions x en and de answers; q2: its only answer is German.
    assert sorted(zip(pairs.qid, pairs.q_lang, pairs.p_lang, pairs.is_mono)) == [
        ("q1", "de", "de", True), ("q1", "de", "en", False), ("q1", "en", "de", False),
        ("q1", "en", "en", True), ("q2", "de", "de", True), ("q2", "en", "de", False),
    ]


def test_missing_local_file_names_it(tmp_path):
    (tmp_path / "mlqa-r").mkdir()
    with pytest.raises(DataUnavailableError, match=r"mlqa-r.*de\.json"):
        load_lareqa("mlqa-r", languages=["de"], root=tmp_path)


def test_offline_download_fails_with_a_hint(tmp_path):
    # Port 9 (discard) on localhost refuses the connection, as an offline machine does.
    with pytest.raises(DataUnavailableError, match=r"put the file at .*en\.json"):
        load_lareqa("xquad-r", languages=["en"], download_dir=tmp_path, base_url="http://127.0.0.1:9")
    assert not (tmp_path / "xquad-r" / "en.json").exists()


def test_a_silent_server_times_out_instead_of_hanging(tmp_path):
    with socket.socket() as server:  # accepts connections, never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(DataUnavailableError, match="timed out"):
            resolve_files(["en.json"], None, url, tmp_path, "xquad-r", timeout=0.5)


def test_guard_refuses_the_training_set(shared_data_dir):
    mlqa = load_lareqa("mlqa-r", languages=["de"], root=shared_data_dir)
    xquad = load_lareqa("xquad-r", languages=["de"], root=shared_data_dir)
    with pytest.raises(ValueError, match="mlqa-r"):
        ensure_disjoint(mlqa, load_lareqa("mlqa-r", languages=["de"], root=shared_data_dir))
    ensure_disjoint(mlqa, xquad)  # the offline protocol's split: different articles, no shared id


def test_unknown_language_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="no languages \\['el'\\]"):
        load_lareqa("mlqa-r", languages=["el"], root=tmp_path)


def test_downloads_come_from_the_commit_that_still_holds_each_dataset(tmp_path, shared_data_dir, monkeypatch):
    """mlqa-r/ was deleted from the repository's master (commit b91469b); it is fetched from the
    commit that holds it, xquad-r from master. The fake network serves the local copies."""
    asked = []

    def fake_urlopen(url, timeout):
        asked.append(url)
        dataset, name = url.split("/")[-2:]
        return open(shared_data_dir / dataset / name, "rb")

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    mlqa = load_lareqa("mlqa-r", languages=["de"], download_dir=tmp_path)
    xquad = load_lareqa("xquad-r", languages=["de"], download_dir=tmp_path)
    assert asked == [
        "https://raw.githubusercontent.com/google-research-datasets/lareqa/"
        "354d67d1cd066854cdfbf5ad0e6105528976141d/mlqa-r/de.json",
        "https://raw.githubusercontent.com/google-research-datasets/lareqa/master/xquad-r/de.json",
    ]
    assert len(mlqa.questions) == 512 and len(xquad.questions) == 1190  # the README's counts

"""Tatoeba: XTREME's 36 bitexts load from the real files; top-1 accuracy against pytrec_eval."""

from __future__ import annotations

import numpy as np
import pytest
import pytrec_eval
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from hybridsweep.data.download import DataUnavailableError
from hybridsweep.data.tatoeba import XTREME_LANGUAGES, load_tatoeba
from hybridsweep.evaluation.tatoeba import top1_accuracy


def test_xtreme_languages_load(shared_data_dir):
    assert len(XTREME_LANGUAGES) == 36
    bitexts = load_tatoeba(root=shared_data_dir)
    assert [b.lang for b in bitexts] == list(XTREME_LANGUAGES)
    for bitext in bitexts:
        assert 0 < len(bitext.sentences) == len(bitext.english) <= 1000
    german = next(b for b in bitexts if b.lang == "de")
    english = (shared_data_dir / "tatoeba" / "tatoeba.deu-eng.eng").read_text(encoding="utf-8").splitlines()
    assert german.english == english


def test_misaligned_files_are_refused(tmp_path):
    (tmp_path / "tatoeba").mkdir()
    (tmp_path / "tatoeba" / "tatoeba.deu-eng.deu").write_text("eins\nzwei\n")
    (tmp_path / "tatoeba" / "tatoeba.deu-eng.eng").write_text("one\n")
    with pytest.raises(ValueError, match="line-aligned"):
        load_tatoeba(["de"], root=tmp_path)
    with pytest.raises(DataUnavailableError, match="tatoeba.fra-eng.fra"):
        load_tatoeba(["fr"], root=tmp_path)


@pytest.mark.parametrize("lang", ["de", "fr"])
def test_top1_accuracy_agrees_with_pytrec_eval(shared_data_dir, lang):
    bitext = load_tatoeba([lang], root=shared_data_dir)[0]
    source, english = bitext.sentences[:300], bitext.english[:300]
    tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)).fit_transform(source + english)
    vectors = TruncatedSVD(64, random_state=0).fit_transform(tfidf).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    source_emb, english_emb = vectors[:300], vectors[300:]
    for queries, targets in ((source_emb, english_emb), (english_emb, source_emb)):
        scores = queries @ targets.T
        run = {f"q{i}": {f"d{j}": float(s) for j, s in enumerate(row)} for i, row in enumerate(scores)}
        qrels = {f"q{i}": {f"d{i}": 1} for i in range(len(queries))}
        per_query = pytrec_eval.RelevanceEvaluator(qrels, {"P.1"}).evaluate(run)
        reference = np.mean([v["P_1"] for v in per_query.values()])
        assert top1_accuracy(queries, targets) == pytest.approx(reference, abs=1e-6)
        assert 0.05 < reference < 1  # a real, imperfect ranking

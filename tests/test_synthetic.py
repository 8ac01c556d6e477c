import unicodedata
from collections import Counter

import pytest

from hybridsweep.data.parallel_qa import ensure_disjoint, split_question_ids, training_pairs
from hybridsweep.data.synthetic import LANGUAGES, generate, spell_name


def _scripts(text: str) -> set[str]:
    return {unicodedata.name(ch).split()[0] for ch in text if ch.isalpha()}


def test_six_languages_in_four_scripts():
    corpus = generate(n_people=5)
    assert len(corpus.languages) >= 6
    seen = set()
    for q in corpus.questions:
        seen |= _scripts(q.text)
    assert {"LATIN", "CYRILLIC", "GREEK", "CJK"} <= seen


def test_every_fact_has_one_question_and_one_answer_per_language():
    corpus = generate(n_people=20, facts_per_person=3, distractors_per_person=2)
    per_id = Counter(q.id for q in corpus.questions)
    assert len(per_id) == 60 and set(per_id.values()) == {len(LANGUAGES)}
    answers = Counter(qid for c in corpus.candidates for qid in c.answer_ids)
    assert answers == per_id
    assert sum(1 for c in corpus.candidates if not c.answer_ids) == 20 * 2 * len(LANGUAGES)
    # The answer sentence names the person of its question, in the same script.
    for q in corpus.questions:
        answer = next(c for c in corpus.candidates if q.id in c.answer_ids and c.lang == q.lang)
        k = int(q.id.split("-")[1])
        assert spell_name(4 * k, q.lang) in q.text and spell_name(4 * k, q.lang) in answer.text


def test_seeded_and_any_size():
    assert generate(n_people=7, seed=3) == generate(n_people=7, seed=3)
    assert generate(n_people=7, seed=3) != generate(n_people=7, seed=4)
    assert len(generate(n_people=1000, facts_per_person=1, languages=["en"]).questions) == 1000


def test_held_out_split_shares_no_fact_and_no_person():
    train, held_out = generate(n_people=300), generate(n_people=300, split="eval")
    ensure_disjoint(train, held_out)

    def people(split):
        return {spell_name(4 * k + (split == "eval"), "en") for k in range(300)}

    assert not people("train") & people("eval")
    train_text = " ".join(q.text for q in train.questions)
    assert all(name not in train_text for name in people("eval"))
    with pytest.raises(ValueError, match="refusing"):
        ensure_disjoint(train, generate(n_people=3))


def test_names_are_distinct_in_every_script():
    for lang in LANGUAGES:
        spelled = [spell_name(i, lang) for i in range(3000)]
        assert len(set(spelled)) == len(spelled), lang


def test_pairs_split_into_mono_and_cross():
    corpus = generate(n_people=10, facts_per_person=2, languages=["en", "de", "ru"])
    pairs = training_pairs(corpus)
    assert len(pairs) == 20 * 3 * 3
    assert sum(pairs["is_mono"]) == 20 * 3
    assert all((q == p) == m for q, p, m in zip(pairs["q_lang"], pairs["p_lang"], pairs["is_mono"]))


def test_data_scale_subsets_are_nested():
    ids = [f"id{i}" for i in range(100)]
    (small, _), (large, _) = split_question_ids(ids, 0.1, seed=0), split_question_ids(ids, 0.5, seed=0)
    assert len(small) == 10 and len(large) == 50 and set(small) <= set(large)
    assert split_question_ids(ids, 30, seed=0)[0][:10] == small
    with pytest.raises(ValueError, match="asks for 200"):
        split_question_ids(ids, 200, seed=0)


def test_validation_ids_are_held_out_of_every_scale_and_scales_still_nest():
    ids = [f"id{i}" for i in range(200)]
    splits = [split_question_ids(ids, scale, seed=3, validation=0.1) for scale in (0.25, 0.5, 1.0, 60)]
    held_out = splits[0][1]
    assert len(held_out) == 20 and all(validation == held_out for _, validation in splits)
    trains = [train for train, _ in splits]
    assert [len(t) for t in trains] == [45, 90, 180, 60]
    assert all(not set(t) & set(held_out) for t in trains)
    assert set(trains[0]) <= set(trains[3]) <= set(trains[1]) <= set(trains[2])
    assert set(trains[2]) | set(held_out) == set(ids)
    assert split_question_ids(ids, 1.0, seed=3, validation=7)[1] == held_out[:7]
    with pytest.raises(ValueError, match="data.validation=1.5"):
        split_question_ids(ids, 1.0, seed=0, validation=1.5)
    with pytest.raises(ValueError, match="none left to train on"):
        split_question_ids(ids, 1.0, seed=0, validation=200)

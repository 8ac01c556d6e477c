"""The embedded default corpus: seeded, parallel, multilingual facts about invented people.

Every *fact* is (person, relation, value), e.g. (Bamoriks, instrument, violin). Each fact has one
question and one answer sentence per language, written from hand-made templates in six languages
and four scripts (Latin: en, de, es; Cyrillic: ru; Greek: el; Han: zh). Names are invented
syllable strings, transliterated into each script, so that matching a Greek question to a Russian
answer needs a learned alignment of names across scripts, not string overlap. Each person also
has *distractor* statements (relations nobody asks about) that share the person's name with the
answers: they are hard negatives in every pool.

Splits draw people from disjoint id ranges (``train`` even, ``eval`` odd), so a held-out set
never shares a fact, nor even a person, with training. Any size is available up to the name
space (over a million names); the same (seed, split, size) always yields the same corpus.
"""

from __future__ import annotations

import numpy as np

from hybridsweep.data.parallel_qa import Candidate, ParallelQA, Question

LANGUAGES = ("en", "de", "es", "ru", "el", "zh")
SPLITS = {"train": 0, "eval": 1}

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_FINALS = ("", "n", "r", "s")

# Syllable spellings per script. Chinese writes a syllable as one character (a common
# transliteration character); the table is injective so that names stay distinguishable.
_CYRILLIC = dict(zip(_CONSONANTS + _VOWELS, "бдфгклмнпрствзаеиоу"))
_GREEK = {
    "b": "μπ", "d": "ντ", "f": "φ", "g": "γκ", "k": "κ", "l": "λ", "m": "μ", "n": "ν", "p": "π",
    "r": "ρ", "s": "σ", "t": "τ", "v": "β", "z": "ζ",
    "a": "α", "e": "ε", "i": "ι", "o": "ο", "u": "ου",
}
_HAN = dict(zip(
    [c + v for c in _CONSONANTS for v in _VOWELS],
    "巴贝比波布达德迪多杜法费菲佛福加格吉戈古卡克基科库拉勒利洛卢马梅米莫穆纳内尼诺努"
    "帕佩皮珀普腊雷里罗鲁萨塞西索苏塔特蒂托图瓦维薇沃武扎泽齐佐祖",
))
_HAN_FINALS = {"": "", "n": "恩", "r": "尔", "s": "斯"}

# relation -> language -> (question template, answer template); {e} is the person, {v} the value.
TEMPLATES: dict[str, dict[str, tuple[str, str]]] = {
    "birthplace": {
        "en": ("Where was {e} born?", "{e} was born in the city of {v}."),
        "de": ("Wo wurde {e} geboren?", "{e} wurde in der Stadt {v} geboren."),
        "es": ("¿Dónde nació {e}?", "{e} nació en la ciudad de {v}."),
        "ru": ("Где родился {e}?", "{e} родился в городе {v}."),
        "el": ("Πού γεννήθηκε ο {e};", "Ο {e} γεννήθηκε στην πόλη {v}."),
        "zh": ("{e}出生在哪里？", "{e}出生在{v}市。"),
    },
    "profession": {
        "en": ("What does {e} do for a living?", "{e} works as a {v}."),
        "de": ("Was ist {e} von Beruf?", "{e} arbeitet als {v}."),
        "es": ("¿A qué se dedica {e}?", "{e} trabaja como {v}."),
        "ru": ("Кем работает {e}?", "По профессии {e} — {v}."),
        "el": ("Τι δουλειά κάνει ο {e};", "Ο {e} εργάζεται ως {v}."),
        "zh": ("{e}的职业是什么？", "{e}是一名{v}。"),
    },
    "colour": {
        "en": ("What is the favourite colour of {e}?", "The favourite colour of {e} is {v}."),
        "de": ("Was ist die Lieblingsfarbe von {e}?", "Die Lieblingsfarbe von {e} ist {v}."),
        "es": ("¿Cuál es el color favorito de {e}?", "El color favorito de {e} es el {v}."),
        "ru": ("Какой любимый цвет у {e}?", "Любимый цвет {e} — {v}."),
        "el": ("Ποιο είναι το αγαπημένο χρώμα του {e};", "Το αγαπημένο χρώμα του {e} είναι το {v}."),
        "zh": ("{e}最喜欢的颜色是什么？", "{e}最喜欢的颜色是{v}。"),
    },
    "birth_year": {
        "en": ("In which year was {e} born?", "{e} was born in the year {v}."),
        "de": ("In welchem Jahr wurde {e} geboren?", "{e} wurde im Jahr {v} geboren."),
        "es": ("¿En qué año nació {e}?", "{e} nació en el año {v}."),
        "ru": ("В каком году родился {e}?", "{e} родился в {v} году."),
        "el": ("Σε ποια χρονιά γεννήθηκε ο {e};", "Ο {e} γεννήθηκε το έτος {v}."),
        "zh": ("{e}是哪一年出生的？", "{e}出生于{v}年。"),
    },
    "pet": {
        "en": ("Which animal does {e} keep at home?", "At home, {e} keeps a {v}."),
        "de": ("Welches Tier hält {e} zu Hause?", "Zu Hause hält {e} {v}."),
        "es": ("¿Qué animal tiene {e} en casa?", "En casa, {e} tiene {v}."),
        "ru": ("Какое животное {e} держит дома?", "Дома {e} держит {v}."),
        "el": ("Ποιο ζώο έχει ο {e} στο σπίτι;", "Στο σπίτι ο {e} έχει {v}."),
        "zh": ("{e}在家里养了什么动物？", "{e}在家里养了{v}。"),
    },
    "instrument": {
        "en": ("Which instrument does {e} play?", "{e} plays the {v} every evening."),
        "de": ("Welches Instrument spielt {e}?", "{e} spielt jeden Abend {v}."),
        "es": ("¿Qué instrumento toca {e}?", "{e} toca {v} todas las noches."),
        "ru": ("На каком инструменте играет {e}?", "Каждый вечер {e} играет на {v}."),
        "el": ("Ποιο όργανο παίζει ο {e};", "Ο {e} παίζει {v} κάθε βράδυ."),
        "zh": ("{e}演奏什么乐器？", "{e}每天晚上弹奏{v}。"),
    },
}

# relation -> language -> the value vocabulary, index-aligned across languages.
VOCABULARY: dict[str, dict[str, list[str]]] = {
    "profession": {
        "en": ["baker", "doctor", "pilot", "teacher", "painter", "farmer", "lawyer", "sailor"],
        "de": ["Bäcker", "Arzt", "Pilot", "Lehrer", "Maler", "Bauer", "Anwalt", "Seemann"],
        "es": ["panadero", "médico", "piloto", "profesor", "pintor", "agricultor", "abogado", "marinero"],
        "ru": ["пекарь", "врач", "пилот", "учитель", "художник", "фермер", "юрист", "моряк"],
        "el": ["φούρναρης", "γιατρός", "πιλότος", "δάσκαλος", "ζωγράφος", "αγρότης", "δικηγόρος", "ναύτης"],
        "zh": ["面包师", "医生", "飞行员", "教师", "画家", "农民", "律师", "水手"],
    },
    "colour": {
        "en": ["red", "blue", "green", "yellow", "black", "white", "purple", "orange"],
        "de": ["Rot", "Blau", "Grün", "Gelb", "Schwarz", "Weiß", "Lila", "Orange"],
        "es": ["rojo", "azul", "verde", "amarillo", "negro", "blanco", "morado", "naranja"],
        "ru": ["красный", "синий", "зелёный", "жёлтый", "чёрный", "белый", "фиолетовый", "оранжевый"],
        "el": ["κόκκινο", "μπλε", "πράσινο", "κίτρινο", "μαύρο", "άσπρο", "μωβ", "πορτοκαλί"],
        "zh": ["红色", "蓝色", "绿色", "黄色", "黑色", "白色", "紫色", "橙色"],
    },
    "pet": {
        "en": ["cat", "dog", "horse", "parrot", "goat", "rabbit", "fish", "owl"],
        "de": ["eine Katze", "einen Hund", "ein Pferd", "einen Papagei", "eine Ziege",
               "ein Kaninchen", "einen Fisch", "eine Eule"],
        "es": ["un gato", "un perro", "un caballo", "un loro", "una cabra", "un conejo", "un pez", "un búho"],
        "ru": ["кошку", "собаку", "лошадь", "попугая", "козу", "кролика", "рыбку", "сову"],
        "el": ["μια γάτα", "έναν σκύλο", "ένα άλογο", "έναν παπαγάλο", "μια κατσίκα",
               "ένα κουνέλι", "ένα ψάρι", "μια κουκουβάγια"],
        "zh": ["一只猫", "一条狗", "一匹马", "一只鹦鹉", "一只山羊", "一只兔子", "一条鱼", "一只猫头鹰"],
    },
    "instrument": {
        "en": ["piano", "violin", "guitar", "flute", "drum", "trumpet", "harp", "cello"],
        "de": ["Klavier", "Geige", "Gitarre", "Flöte", "Trommel", "Trompete", "Harfe", "Cello"],
        "es": ["el piano", "el violín", "la guitarra", "la flauta", "el tambor", "la trompeta",
               "el arpa", "el violonchelo"],
        "ru": ["пианино", "скрипке", "гитаре", "флейте", "барабане", "трубе", "арфе", "виолончели"],
        "el": ["πιάνο", "βιολί", "κιθάρα", "φλάουτο", "τύμπανο", "τρομπέτα", "άρπα", "τσέλο"],
        "zh": ["钢琴", "小提琴", "吉他", "长笛", "鼓", "小号", "竖琴", "大提琴"],
    },
}
RELATIONS = tuple(TEMPLATES)

_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]
_NAME_SPACE = len(_SYLLABLES) ** 3 * len(_FINALS)
# An affine permutation of the name space scatters consecutive ids over unrelated-looking names.
_PERMUTE_A, _PERMUTE_B = 716_663, 91_129
_CITIES = 1_000


def _name_syllables(index: int) -> tuple[list[str], str]:
    code = (_PERMUTE_A * index + _PERMUTE_B) % _NAME_SPACE
    code, final = divmod(code, len(_FINALS))
    syllables = []
    for _ in range(3):
        code, digit = divmod(code, len(_SYLLABLES))
        syllables.append(_SYLLABLES[digit])
    return syllables, _FINALS[final]


def spell_name(index: int, lang: str) -> str:
    """The invented name number ``index`` written in ``lang``'s script (injective per script)."""
    syllables, final = _name_syllables(index)
    if lang == "zh":
        return "".join(_HAN[s] for s in syllables) + _HAN_FINALS[final]
    latin = "".join(syllables) + final
    if lang == "ru":
        return "".join(_CYRILLIC[ch] for ch in latin).capitalize()
    if lang == "el":
        spelled = "".join(_GREEK[ch] for ch in latin)
        return (spelled[:-1] + "ς" if spelled.endswith("σ") else spelled).capitalize()
    return latin.capitalize()


def _person_index(split: str, k: int) -> int:
    return 4 * k + SPLITS[split]


def _city_index(k: int) -> int:
    return 4 * k + 2


def _value_text(relation: str, value: int, lang: str) -> str:
    if relation == "birthplace":
        return spell_name(_city_index(value), lang)
    if relation == "birth_year":
        return str(value)
    return VOCABULARY[relation][lang][value]


def _draw_value(relation: str, rng: np.random.Generator) -> int:
    if relation == "birthplace":
        return int(rng.integers(_CITIES))
    if relation == "birth_year":
        return int(rng.integers(1800, 2020))
    return int(rng.integers(len(VOCABULARY[relation]["en"])))


def generate(
    n_people: int,
    split: str = "train",
    languages: list[str] | tuple[str, ...] = LANGUAGES,
    facts_per_person: int = 3,
    distractors_per_person: int = 1,
    seed: int = 0,
) -> ParallelQA:
    """Generate the parallel corpus of ``n_people`` invented people.

    Each person gets ``facts_per_person`` asked facts (a question and an answer sentence in every
    language, all sharing the fact's question id) and ``distractors_per_person`` unasked
    statements (candidates relevant to nothing). Relations and values are drawn from a generator
    seeded by ``(seed, split)``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    unknown = sorted(set(languages) - set(LANGUAGES))
    if unknown:
        raise ValueError(f"languages {unknown} have no templates; available: {list(LANGUAGES)}")
    if facts_per_person + distractors_per_person > len(RELATIONS):
        raise ValueError(
            f"facts_per_person + distractors_per_person must be <= {len(RELATIONS)} relations"
        )
    if _person_index(split, n_people) >= _NAME_SPACE:
        raise ValueError(f"n_people={n_people} exceeds the name space ({_NAME_SPACE // 4} per split)")

    rng = np.random.default_rng([seed, SPLITS[split]])
    questions: list[Question] = []
    candidates: list[Candidate] = []
    for k in range(n_people):
        person = _person_index(split, k)
        relations = rng.permutation(len(RELATIONS))[: facts_per_person + distractors_per_person]
        for position, r in enumerate(relations):
            relation = RELATIONS[r]
            value = _draw_value(relation, rng)
            qid = f"{split}-{k}-{relation}"
            asked = position < facts_per_person
            for lang in languages:
                name = spell_name(person, lang)
                question, answer = TEMPLATES[relation][lang]
                if asked:
                    questions.append(Question(qid, lang, question.format(e=name)))
                candidates.append(Candidate(
                    lang, answer.format(e=name, v=_value_text(relation, value, lang)),
                    (qid,) if asked else (),
                ))
    return ParallelQA(f"synthetic-{split}", questions, candidates)

"""Tatoeba v1 (LASER; XTREME's sentence-retrieval task): line-aligned sentence pairs with English.

Files ``tatoeba.<xxx>-eng.<xxx>`` and ``tatoeba.<xxx>-eng.eng`` hold up to 1,000 sentences each;
line i of one is the translation of line i of the other. XTREME evaluates 36 languages, listed
below by XTREME's code with the LASER file code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hybridsweep.data.download import resolve_files

LASER_TATOEBA_URL = "https://raw.githubusercontent.com/facebookresearch/LASER/main/data/tatoeba/v1"
XTREME_LANGUAGES = {
    "af": "afr", "ar": "ara", "bg": "bul", "bn": "ben", "de": "deu", "el": "ell", "es": "spa",
    "et": "est", "eu": "eus", "fa": "pes", "fi": "fin", "fr": "fra", "he": "heb", "hi": "hin",
    "hu": "hun", "id": "ind", "it": "ita", "ja": "jpn", "jv": "jav", "ka": "kat", "kk": "kaz",
    "ko": "kor", "ml": "mal", "mr": "mar", "nl": "nld", "pt": "por", "ru": "rus", "sw": "swh",
    "ta": "tam", "te": "tel", "th": "tha", "tl": "tgl", "tr": "tur", "ur": "urd", "vi": "vie",
    "zh": "cmn",
}


@dataclass
class Bitext:
    """Sentences of one language and their English translations, aligned by position."""

    lang: str
    sentences: list[str]
    english: list[str]


def load_tatoeba(
    languages: list[str] | None = None,
    root: str | os.PathLike | None = None,
    download_dir: str | os.PathLike = "~/.cache/hybridsweep/downloads",
    base_url: str = LASER_TATOEBA_URL,
) -> list[Bitext]:
    """The Tatoeba bitexts of ``languages`` (XTREME codes; default all 36) from ``root/tatoeba/`` or LASER."""
    languages = list(languages or XTREME_LANGUAGES)
    unknown = sorted(set(languages) - set(XTREME_LANGUAGES))
    if unknown:
        raise ValueError(f"Tatoeba languages {unknown} are not among XTREME's: {sorted(XTREME_LANGUAGES)}")
    names = {lang: (f"tatoeba.{XTREME_LANGUAGES[lang]}-eng.{XTREME_LANGUAGES[lang]}",
                    f"tatoeba.{XTREME_LANGUAGES[lang]}-eng.eng") for lang in languages}
    local_dir = None if root is None else Path(root).expanduser() / "tatoeba"
    files = resolve_files([n for pair in names.values() for n in pair], local_dir, base_url, download_dir, "tatoeba")
    bitexts = []
    for lang, (source_name, english_name) in names.items():
        sentences = files[source_name].read_text(encoding="utf-8").splitlines()
        english = files[english_name].read_text(encoding="utf-8").splitlines()
        if len(sentences) != len(english):
            raise ValueError(f"{files[source_name]} has {len(sentences)} lines but {files[english_name]} "
                             f"has {len(english)}: the files must be line-aligned")
        bitexts.append(Bitext(lang, sentences, english))
    return bitexts

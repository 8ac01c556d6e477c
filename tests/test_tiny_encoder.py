"""The embedded encoder's tokenizer: the same corpus gives the same vocabulary in every process."""

import json
import subprocess
import sys

from hybridsweep.data.synthetic import generate
from hybridsweep.encoders.tiny import cached_tokenizer

_TRAIN = """
import json, sys
from hybridsweep.data.synthetic import generate
from hybridsweep.encoders.tiny import cached_tokenizer
tokenizer = cached_tokenizer(generate(n_people=40), 500, sys.argv[1])
print(json.dumps(sorted(tokenizer.get_vocab().items())))
"""


def test_fresh_caches_train_identical_vocabularies(tmp_path):
    # Separate processes: hash-map iteration order, the usual culprit, is seeded per process.
    vocabularies = [
        json.loads(subprocess.run([sys.executable, "-c", _TRAIN, str(tmp_path / f"cache{i}")],
                                  capture_output=True, text=True, check=True).stdout)
        for i in range(3)
    ]
    assert len(vocabularies[0]) == 500
    assert vocabularies[1] == vocabularies[0] and vocabularies[2] == vocabularies[0]


def test_unseen_words_split_into_known_pieces(tmp_path):
    """Held-out people have unseen names: they must become subword pieces, not [UNK]."""
    tokenizer = cached_tokenizer(generate(n_people=40), 500, tmp_path)
    held_out = generate(n_people=5, split="eval")
    ids = tokenizer([q.text for q in held_out.questions[:50]])["input_ids"]
    assert all(tokenizer.unk_token_id not in row for row in ids)
    assert tokenizer.decode(ids[0], skip_special_tokens=True).replace(" ", "") == \
        held_out.questions[0].text.lower().replace(" ", "")

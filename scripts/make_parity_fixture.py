"""Writes tests/fixtures/<OUT>: token ids and last hidden states of a fetched model for a few
sentences, computed with the reference implementation (PyTorch + Hugging Face transformers).
The Rust parity tests compare against it.

    python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install torch transformers
    /tmp/refvenv/bin/python scripts/make_parity_fixture.py [MODEL_DIR [OUT]]

Defaults: all-MiniLM-L6-v2 into minilm_parity.json. For MPNet:
    scripts/make_parity_fixture.py ~/.cache/freeal-bench/models/all-mpnet-base-v2 mpnet_parity.json
"""
import json
import os
import sys

import torch
from transformers import AutoModel, AutoTokenizer

MODEL_DIR = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser(
    "~/.cache/freeal-bench/models/all-MiniLM-L6-v2")
OUT = sys.argv[2] if len(sys.argv) > 2 else "minilm_parity.json"
SENTENCES = [
    "a gripping, beautifully acted film.",
    "The plot is thin; the jokes fall flat.",
    "it 's a charming and often affecting journey .",
    # Over 70 tokens: positions far from the start, and MPNet's relative-position bias in its
    # log-spaced buckets.
    "the film opens with a long, quiet shot of an empty harbour at dawn , and for the next two "
    "hours it never quite decides whether it wants to be a thriller , a romance or a meditation "
    "on grief ; the actors do what they can with lines that sound as if they were translated "
    "twice , but by the time the storm finally arrives nobody in the audience cares who "
    "survives it .",
]

torch.manual_seed(0)
tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
model = AutoModel.from_pretrained(MODEL_DIR).eval()
batch = tokenizer(SENTENCES, padding=True, truncation=True, max_length=128, return_tensors="pt")
with torch.no_grad():
    hidden = model(**batch).last_hidden_state
rows = []
for i, text in enumerate(SENTENCES):
    n = int(batch["attention_mask"][i].sum())
    states = hidden[i, :n]
    mean = states.mean(dim=0)
    rows.append({
        "text": text,
        "ids": batch["input_ids"][i, :n].tolist(),
        "last_hidden_state": [[round(v, 6) for v in row] for row in states.tolist()],
        "mean_pooled": [round(v, 6) for v in mean.tolist()],
    })
out = {
    "model": os.path.basename(os.path.normpath(MODEL_DIR)),
    "reference": f"torch {torch.__version__}, transformers {__import__('transformers').__version__}",
    "rows": rows,
}
path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", OUT)
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
print(f"wrote {path}: {sum(len(r['ids']) for r in rows)} token states")

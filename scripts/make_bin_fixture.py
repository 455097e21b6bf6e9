"""Writes tests/fixtures/tiny_bert_bin/: a randomly initialised 2-layer BERT saved the old way
(config.json + pytorch_model.bin, a torch pickle), and expected.json with its last hidden states
for two padded id sequences, computed by PyTorch + transformers. tests/encoder_bin.rs loads the
.bin through burn and compares.

    /tmp/refvenv/bin/python scripts/make_bin_fixture.py
"""
import json
import os

import torch
from transformers import BertConfig, BertModel

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tiny_bert_bin")
IDS = [[2, 5, 7, 9, 11, 3], [2, 13, 4, 3, 0, 0]]

torch.manual_seed(7)
config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=24, type_vocab_size=2,
                    pad_token_id=0, hidden_act="gelu")
model = BertModel(config, add_pooling_layer=False).eval()
# Non-trivial LayerNorm parameters, so a load that skipped them would show.
with torch.no_grad():
    for name, p in model.named_parameters():
        if "LayerNorm" in name:
            p.add_(0.1 * torch.randn_like(p))
os.makedirs(OUT, exist_ok=True)
model.save_pretrained(OUT, safe_serialization=False)
ids = torch.tensor(IDS)
mask = (ids != 0).long()
with torch.no_grad():
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
rows = []
for i, seq in enumerate(IDS):
    n = int(mask[i].sum())
    rows.append({"ids": seq[:n],
                 "last_hidden_state": [[round(v, 7) for v in r] for r in hidden[i, :n].tolist()]})
with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump({"source": "scripts/make_bin_fixture.py", "torch": torch.__version__,
               "rows": rows}, f)
print("wrote", OUT, sorted(os.listdir(OUT)))

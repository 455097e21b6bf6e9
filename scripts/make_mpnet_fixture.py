"""Writes tests/fixtures/tiny_mpnet/: a randomly initialised 2-layer MPNet (config.json +
model.safetensors) and expected.json with its last hidden states for two padded id sequences,
long enough that the relative-position bias uses its log-spaced buckets, computed by PyTorch +
transformers; and transformers' bucket of every offset in -300..300. tests/encoder_mpnet.rs
loads the checkpoint through burn and compares.

    /tmp/refvenv/bin/python scripts/make_mpnet_fixture.py
"""
import json
import os

import torch
from transformers import MPNetConfig, MPNetModel
from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tiny_mpnet")
PAD = 1
LONG, SHORT = 150, 37  # past the 64 and 128 offsets where the log-spaced buckets change

torch.manual_seed(11)
config = MPNetConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=LONG + 2, pad_token_id=PAD,
                     relative_attention_num_buckets=32, hidden_act="gelu")
model = MPNetModel(config, add_pooling_layer=False).eval()
with torch.no_grad():
    # Non-trivial layer norms, and a bias large enough to move the states, so that a load that
    # skipped either would show.
    for name, p in model.named_parameters():
        if "LayerNorm" in name:
            p.add_(0.1 * torch.randn_like(p))
    model.encoder.relative_attention_bias.weight.normal_(0.0, 1.0)
os.makedirs(OUT, exist_ok=True)
model.save_pretrained(OUT, safe_serialization=True)
ids = torch.randint(4, 40, (2, LONG))
ids[:, 0], ids[0, LONG - 1], ids[1, SHORT - 1] = 0, 2, 2
ids[1, SHORT:] = PAD
mask = (ids != PAD).long()
with torch.no_grad():
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
rows = []
for i in range(2):
    n = int(mask[i].sum())
    rows.append({"ids": ids[i, :n].tolist(),
                 "last_hidden_state": [[round(v, 7) for v in r] for r in hidden[i, :n].tolist()]})
offsets = list(range(-300, 301))
buckets = MPNetEncoder.relative_position_bucket(torch.tensor(offsets), num_buckets=32,
                                                max_distance=128).tolist()
with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump({"source": "scripts/make_mpnet_fixture.py", "torch": torch.__version__,
               "transformers": __import__("transformers").__version__, "rows": rows,
               "bucket_offsets": offsets, "buckets": buckets}, f)
print("wrote", OUT, sorted(os.listdir(OUT)))

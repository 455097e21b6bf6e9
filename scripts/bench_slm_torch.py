"""PyTorch + transformers side of the SLM throughput benchmark: the same model
(all-MiniLM-L6-v2 + mean pooling + linear head), batch 32, sequences of exactly
max_len tokens, AdamW, dropout 0.1, on the CPU with all cores. Prints lines in the
same format as `cargo bench --bench slm_throughput`.

    /tmp/refvenv/bin/python scripts/bench_slm_torch.py [MODEL_DIR]
"""
import os
import sys
import time

import torch
from transformers import AutoModel

MODEL_DIR = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser(
    "~/.cache/freeal-bench/models/all-MiniLM-L6-v2")
BATCH, WARMUP_STEPS = 32, 2
TRAIN_STEPS = int(os.environ.get("FREEAL_BENCH_TRAIN_STEPS", "6"))
DEVICE = torch.device(os.environ.get("FREEAL_BENCH_TORCH_DEVICE", "cpu"))


def sync():
    """Waits for queued GPU work, so that the timer sees it."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


class Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = AutoModel.from_pretrained(MODEL_DIR, hidden_dropout_prob=0.1,
                                                 attention_probs_dropout_prob=0.1)
        self.dropout = torch.nn.Dropout(0.1)
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, 2)

    def forward(self, ids, mask):
        states = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        pooled = (states * m).sum(1) / m.sum(1).clamp(min=1)
        return pooled, self.head(self.dropout(pooled))


def sequences(n, length):
    ids = torch.tensor([[101] + [2000 + (i * 31 + j * 7) % 20000 for j in range(length - 2)] + [102]
                        for i in range(n)])
    return ids.to(DEVICE), torch.ones_like(ids).to(DEVICE)


def main():
    torch.manual_seed(0)
    where = (torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda"
             else f"cpu, {torch.get_num_threads()} threads")
    print(f"device: {where} (torch {torch.__version__})")
    for max_len in (64, 128):
        model = Classifier().to(DEVICE)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01, eps=1e-8)
        labels = (torch.arange(BATCH) % 2).to(DEVICE)

        def train(steps):
            model.train()
            # Built before the clock starts, as the Rust side does.
            ids, mask = sequences(BATCH * steps, max_len)
            sync()
            start = time.perf_counter()
            for s in range(steps):
                sl = slice(s * BATCH, (s + 1) * BATCH)
                _, logits = model(ids[sl], mask[sl])
                loss = torch.nn.functional.cross_entropy(logits, labels)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            sync()
            return time.perf_counter() - start

        train(WARMUP_STEPS)
        t = train(TRAIN_STEPS)
        n = BATCH * TRAIN_STEPS
        print(f"train  max_len {max_len:>3} batch {BATCH}: {n / t:>7.2f} examples/s {n * max_len / t:>9.1f} tokens/s")
        model.eval()
        ids, mask = sequences(BATCH * 8, max_len)
        with torch.no_grad():
            model(ids[:BATCH], mask[:BATCH])
            sync()
            start = time.perf_counter()
            for s in range(8):
                model(ids[s * BATCH:(s + 1) * BATCH], mask[s * BATCH:(s + 1) * BATCH])
            sync()
            t = time.perf_counter() - start
        print(f"embed  max_len {max_len:>3} batch {BATCH}: {BATCH * 8 / t:>7.2f} examples/s {BATCH * 8 * max_len / t:>9.1f} tokens/s")


if __name__ == "__main__":
    main()

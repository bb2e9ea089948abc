#!/usr/bin/env python3
"""Reference outputs of the default model (models/default) from Hugging Face transformers,
for tests/golden/model_golden_test.cc: teacher-forced fp32 logits and 32-token greedy
continuations of a few prompts, in the format of tools/make_golden_models.py
(reference.json + reference.safetensors).

    python3 tools/make_default_model_reference.py \
        --model models/default --out tests/golden/data/default_model

The bf16 weights are upcast exactly to fp32, as the C++ engine does. Prompts whose greedy
continuation has a best-vs-second logit gap under 1e-4 are refused, so fp32 rounding
differences cannot flip a token.
"""
import argparse
import json
import os

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "And the king said unto",
    "In the beginning God created",
    "The LORD is my shepherd; I shall not",
    "Blessed are the meek: for they",
]
NEW_TOKENS = 32
MIN_GAP = 1e-4


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/default")
    ap.add_argument("--out", default="tests/golden/data/default_model")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    os.makedirs(args.out, exist_ok=True)
    tensors, prompts = {}, []
    with torch.no_grad():
        for i, text in enumerate(PROMPTS):
            ids = tok(text, add_special_tokens=True)["input_ids"]
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
            tensors[f"logits.{i}"] = np.ascontiguousarray(logits, dtype=np.float32)
            seq, greedy, min_gap = list(ids), [], float("inf")
            for _ in range(NEW_TOKENS):
                last = model(torch.tensor([seq])).logits[0, -1].float()
                top2 = torch.topk(last, 2).values
                min_gap = min(min_gap, float(top2[0] - top2[1]))
                nxt = int(torch.argmax(last))
                greedy.append(nxt)
                seq.append(nxt)
            if min_gap < MIN_GAP:
                raise SystemExit(f"prompt {text!r}: greedy gap {min_gap:.2e} < {MIN_GAP}")
            prompts.append({"text": text, "input_ids": ids, "greedy_ids": greedy,
                            "greedy_text": tok.decode(greedy), "min_greedy_gap": min_gap})
            print(f"{text!r}: {len(ids)} tokens, gap {min_gap:.2e}: {tok.decode(greedy)!r}")
    save_file(tensors, os.path.join(args.out, "reference.safetensors"))
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump({"model": args.model, "transformers_version": transformers.__version__,
                   "torch_version": torch.__version__, "prompts": prompts}, f, indent=1)


if __name__ == "__main__":
    main()

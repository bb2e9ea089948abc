#!/usr/bin/env python3
"""Writes random-weight bf16 checkpoints of the benchmark shapes in the Hugging Face layout.

Each is a directory that moe-server, moe-generate and transformers load: config.json,
generation_config.json, model-0000N-of-0000M.safetensors shards (at most --shard-gb each)
with model.safetensors.index.json, and the default model's tokenizer (models/default), whose
4,096-token vocabulary every shape uses. Weights are N(0, 0.02) (transformers' default
initializer_range), norm weights 1, drawn from a fixed seed, rounded to bf16 to nearest even;
the files are streamed to disk one tensor at a time, so olmoe-full (13.5 GB) needs about 1 GB
of memory.

Shapes (issue 9, bench/RESULTS.md):
  moe-1b      Mixtral layout: hidden 1024, 16 layers, 32 experts top-4, intermediate 512,
              16 heads, 8 KV heads; 0.86 B parameters, 1.73 GB.
  moe-small   Mixtral layout: hidden 512, 8 layers, 8 experts top-2, intermediate 1024,
              8 heads, 4 KV heads; 0.11 B parameters, 0.23 GB.
  olmoe-full  OLMoE-1B-7B's published shape: hidden 2048, 16 layers, 64 experts top-8,
              intermediate 1024, 16 heads (16 KV heads), full-width q/k norm; 6.7 B
              parameters, 13.5 GB.

Usage: python3 tools/make_bench_checkpoint.py --shape moe-1b --out /tmp/moe-1b
Needs numpy only (pip install numpy).
"""

import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_DIR = os.path.join(REPO, "models", "default")
VOCAB = 4096

SHAPES = {
    "moe-1b": dict(arch="mixtral", hidden=1024, layers=16, experts=32, top_k=4, inter=512,
                   heads=16, kv_heads=8),
    "moe-small": dict(arch="mixtral", hidden=512, layers=8, experts=8, top_k=2, inter=1024,
                      heads=8, kv_heads=4),
    "olmoe-full": dict(arch="olmoe", hidden=2048, layers=16, experts=64, top_k=8, inter=1024,
                       heads=16, kv_heads=16),
}


def config_for(s):
    common = dict(vocab_size=VOCAB, hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                  num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
                  intermediate_size=s["inter"], num_experts_per_tok=s["top_k"],
                  max_position_embeddings=4096, hidden_act="silu", initializer_range=0.02,
                  tie_word_embeddings=False, bos_token_id=None, eos_token_id=0,
                  pad_token_id=0, torch_dtype="bfloat16")
    if s["arch"] == "mixtral":
        return dict(common, architectures=["MixtralForCausalLM"], model_type="mixtral",
                    num_local_experts=s["experts"], rms_norm_eps=1e-5, rope_theta=1e6,
                    sliding_window=None, router_aux_loss_coef=0.02)
    return dict(common, architectures=["OlmoeForCausalLM"], model_type="olmoe",
                num_experts=s["experts"], rms_norm_eps=1e-5, rope_theta=10000.0,
                norm_topk_prob=False, clip_qkv=None, router_aux_loss_coef=0.01)


def tensors_for(s):
    """(name, shape, kind) in file order; kind is 'w' (random) or 'ones' (a norm)."""
    H, I, E = s["hidden"], s["inter"], s["experts"]
    D = H // s["heads"]
    qd, kvd = s["heads"] * D, s["kv_heads"] * D
    out = [("model.embed_tokens.weight", (VOCAB, H), "w")]
    for l in range(s["layers"]):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", (H,), "ones"),
                (p + "post_attention_layernorm.weight", (H,), "ones"),
                (p + "self_attn.q_proj.weight", (qd, H), "w"),
                (p + "self_attn.k_proj.weight", (kvd, H), "w"),
                (p + "self_attn.v_proj.weight", (kvd, H), "w"),
                (p + "self_attn.o_proj.weight", (H, qd), "w")]
        if s["arch"] == "mixtral":
            m = p + "block_sparse_moe."
            out.append((m + "gate.weight", (E, H), "w"))
            for e in range(E):
                out += [(m + f"experts.{e}.w1.weight", (I, H), "w"),
                        (m + f"experts.{e}.w3.weight", (I, H), "w"),
                        (m + f"experts.{e}.w2.weight", (H, I), "w")]
        else:
            out += [(p + "self_attn.q_norm.weight", (qd,), "ones"),
                    (p + "self_attn.k_norm.weight", (kvd,), "ones")]
            m = p + "mlp."
            out.append((m + "gate.weight", (E, H), "w"))
            for e in range(E):
                out += [(m + f"experts.{e}.gate_proj.weight", (I, H), "w"),
                        (m + f"experts.{e}.up_proj.weight", (I, H), "w"),
                        (m + f"experts.{e}.down_proj.weight", (H, I), "w")]
    out += [("model.norm.weight", (H,), "ones"), ("lm_head.weight", (VOCAB, H), "w")]
    return out


def to_bf16(x):
    """fp32 array -> uint16 bf16 bits, round to nearest even."""
    bits = x.astype(np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def write_shard(path, entries, rng):
    header, offset = {}, 0
    for name, shape, _ in entries:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, shape, kind in entries:
            n = int(np.prod(shape))
            if kind == "ones":
                f.write(to_bf16(np.ones(n, np.float32)).tobytes())
                continue
            chunk = 1 << 24
            for at in range(0, n, chunk):
                m = min(chunk, n - at)
                f.write(to_bf16(rng.standard_normal(m, dtype=np.float32) * np.float32(0.02)).tobytes())
    return offset


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--shard-gb", type=float, default=2.0, help="largest shard in GB")
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--layers", type=int, default=0,
                    help="override the shape's layer count (a shorter model of the same layer "
                         "shape, e.g. olmoe-full at 4 layers for a GPU check: 3.4 GB)")
    args = ap.parse_args()

    s = dict(SHAPES[args.shape])
    if args.layers > 0:
        s["layers"] = args.layers
    os.makedirs(args.out, exist_ok=True)
    tensors = tensors_for(s)
    limit = int(args.shard_gb * 1e9)
    shards, current, size = [], [], 0
    for t in tensors:
        n = int(np.prod(t[1])) * 2
        if current and size + n > limit:
            shards.append(current)
            current, size = [], 0
        current.append(t)
        size += n
    shards.append(current)

    rng = np.random.default_rng(args.seed)
    weight_map, total = {}, 0
    for i, entries in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        total += write_shard(os.path.join(args.out, fn), entries, rng)
        for name, _, _ in entries:
            weight_map[name] = fn
        print(f"{args.shape}: wrote {fn}", file=sys.stderr)
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config_for(s), f, indent=2)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": 0}, f)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        src = os.path.join(TOKENIZER_DIR, fn)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(args.out, fn))
    params = sum(int(np.prod(t[1])) for t in tensors)
    print(f"{args.shape}: {params / 1e9:.3f} B parameters, {total / 1e9:.2f} GB of bf16 in "
          f"{len(shards)} shard(s) under {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""vLLM's fused_moe Triton kernel on the shapes of bench/moe_gpu_bench, for issue 12's
comparison (run by scripts/gpu_check.sh beside moe_gpu_bench, on the same device).

Nothing of vLLM is committed. `--extract WHEEL OUT` (on a machine with PyPI, from
scripts/gpu_pack.sh) takes vllm/model_executor/layers/fused_moe/fused_moe.py and its H200
configs out of a vLLM wheel, and writes OUT/vllm_kernel.py: the two @triton.jit functions
(fused_moe_kernel and write_zeros_to_output) cut from that file with `ast`, verbatim,
under `import triton` and `import triton.language as tl` (Triton's JIT reads a function's
source from its file, so they must live in one). The rest of vLLM is not needed: the
token alignment (moe_align_block_size, a CUDA op in vLLM) is done here in torch, outside
the timed region.

`--run DIR` (on the device, needs torch and triton) times, per shape and token count,
vLLM's expert part of the layer as its fused_experts issues it: the gate/up GEMM
(fused_moe_kernel), SiLU*mul (torch), the down GEMM with the routing weights applied
(MUL_ROUTED_WEIGHT) and the sum over the k experts, with the H200 config vLLM ships for
the shape when there is one, else vLLM's default config. Writes JSON (--output).
Our figure (moe_gpu_bench) is the whole layer, router and gating included, so the ratio
favours vLLM.
"""

import argparse
import ast
import json
import os
import sys
import zipfile

FUSED_MOE = "vllm/model_executor/layers/fused_moe/fused_moe.py"
CONFIGS = "vllm/model_executor/layers/fused_moe/configs/"
SHAPES = {"mixtral": (4096, 14336, 8, 2), "olmoe": (2048, 1024, 64, 8)}  # H, I, E, K
KERNELS = ("write_zeros_to_output", "fused_moe_kernel")


def extract(wheel, out):
    os.makedirs(os.path.join(out, "configs"), exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        src = z.read(FUSED_MOE).decode()
        for name in z.namelist():
            base = os.path.basename(name)
            if name.startswith(CONFIGS) and "NVIDIA_H200" in base and "dtype=" not in base:
                if any(base.startswith(f"E={e},N={i},") for _, i, e, _ in SHAPES.values()):
                    with open(os.path.join(out, "configs", base), "wb") as f:
                        f.write(z.read(name))
    tree = ast.parse(src)
    lines = src.splitlines()
    parts = ["# Cut from vLLM's " + FUSED_MOE + " (" + os.path.basename(wheel) + ") by",
             "# tools/vllm_fused_moe_bench.py --extract; not part of moe-serve.",
             "import triton", "import triton.language as tl", ""]
    found = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in KERNELS:
            start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
            parts.append("\n".join(lines[start:node.end_lineno]))
            parts.append("")
            found.append(node.name)
    if sorted(found) != sorted(KERNELS):
        sys.exit(f"vllm_fused_moe_bench: {FUSED_MOE} lacks {set(KERNELS) - set(found)}")
    with open(os.path.join(out, "vllm_kernel.py"), "w") as f:
        f.write("\n".join(parts))
    print(f"vllm_fused_moe_bench: wrote {out}/vllm_kernel.py and "
          f"{len(os.listdir(os.path.join(out, 'configs')))} configs", file=sys.stderr)


def config_for(dirname, E, I, M):
    path = os.path.join(dirname, "configs", f"E={E},N={I},device_name=NVIDIA_H200.json")
    if os.path.exists(path):
        with open(path) as f:
            table = {int(k): v for k, v in json.load(f).items()}
        return dict(table[min(table, key=lambda m: abs(m - M))]), "tuned"
    if M <= E:  # vLLM's get_default_config for bf16
        return {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1}, "default"
    return {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 8}, "default"


def run(dirname, tokens, iters, output):
    import importlib.util

    import torch
    import triton
    import triton.language as tl

    spec = importlib.util.spec_from_file_location("vllm_kernel", os.path.join(dirname, "vllm_kernel.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    kernel = mod.fused_moe_kernel
    dev = torch.device("cuda")

    def align(topk_ids, block_m, E):
        # vLLM's moe_align_block_size: pairs sorted by expert, each expert padded to block_m
        # with the sentinel T*K, and the expert of every block.
        flat = topk_ids.flatten().to(torch.int64)
        n = flat.numel()
        counts = torch.bincount(flat, minlength=E)
        padded = (counts + block_m - 1) // block_m * block_m
        starts = torch.cumsum(padded, 0) - padded
        order = torch.argsort(flat, stable=True)
        e_sorted = flat[order]
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(n, device=dev) - first[e_sorted]
        total = int(padded.sum())
        sorted_ids = torch.full((total,), n, dtype=torch.int32, device=dev)
        sorted_ids[starts[e_sorted] + rank] = order.to(torch.int32)
        expert_ids = torch.repeat_interleave(torch.arange(E, device=dev, dtype=torch.int32),
                                             padded // block_m)
        return sorted_ids, expert_ids, torch.tensor([total], dtype=torch.int32, device=dev)

    def gemm(A, B, C, weights, sorted_ids, expert_ids, num_post, top_k, mul_weight, cfg, T):
        cfg = dict(cfg)
        block_k = cfg.pop("BLOCK_SIZE_K")
        EM = sorted_ids.shape[0]
        if A.shape[0] < cfg["BLOCK_SIZE_M"]:
            EM = min(EM, A.shape[0] * top_k * cfg["BLOCK_SIZE_M"])
        grid = (triton.cdiv(EM, cfg["BLOCK_SIZE_M"]) * triton.cdiv(B.shape[1], cfg["BLOCK_SIZE_N"]),)
        kernel[grid](A, B, C, None, None, weights, sorted_ids, expert_ids, num_post,
                     B.shape[1], B.shape[2], EM, A.shape[0] * top_k,
                     A.stride(0), A.stride(1), B.stride(0), B.stride(2), B.stride(1),
                     C.stride(1), C.stride(2), 0, 0, 0, 0, 0, 0, 0,
                     MUL_ROUTED_WEIGHT=mul_weight, top_k=top_k, compute_type=tl.bfloat16,
                     use_fp8_w8a8=False, use_int8_w8a8=False, use_int8_w8a16=False,
                     per_channel_quant=False, BLOCK_SIZE_K=block_k, **cfg)

    results = {"device": torch.cuda.get_device_name(), "points": []}
    print(f"{'shape':8} {'tokens':>6} {'config':>7} {'us/experts':>11}")
    for name, (H, I, E, K) in SHAPES.items():
        w1 = (torch.randn(E, 2 * I, H, device=dev) * 0.02).to(torch.bfloat16)
        w2 = (torch.randn(E, H, I, device=dev) * 0.02).to(torch.bfloat16)
        for T in tokens:
            x = torch.randn(T, H, device=dev).to(torch.bfloat16)
            probs = torch.softmax(torch.randn(T, E, device=dev), dim=-1)
            topk_w, topk_ids = torch.topk(probs, K, dim=-1)
            topk_w = (topk_w / topk_w.sum(-1, keepdim=True)).contiguous()
            cfg, kind = config_for(dirname, E, I, T)
            sorted_ids, expert_ids, num_post = align(topk_ids, cfg["BLOCK_SIZE_M"], E)
            inter = torch.empty(T, K, 2 * I, device=dev, dtype=torch.bfloat16)
            out = torch.empty(T, K, H, device=dev, dtype=torch.bfloat16)

            def layer():
                gemm(x, w1, inter, topk_w, sorted_ids, expert_ids, num_post, K, False, cfg, T)
                g, u = inter.view(T * K, 2 * I).chunk(2, dim=-1)
                act = (torch.nn.functional.silu(g) * u).contiguous()
                gemm(act, w2, out, topk_w, sorted_ids, expert_ids, num_post, 1, True, cfg, T)
                return out.sum(dim=1)

            layer()
            torch.cuda.synchronize()
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                layer()
            stop.record()
            torch.cuda.synchronize()
            us = start.elapsed_time(stop) * 1e3 / iters
            print(f"{name:8} {T:6d} {kind:>7} {us:11.1f}")
            results["points"].append({"shape": name, "tokens": T, "config": kind, "us_experts": us})
    if output:
        with open(output, "w") as f:
            json.dump(results, f, indent=2)


def compare(ours_json, vllm_json):
    with open(ours_json) as f:
        ours = json.load(f)["points"]
    with open(vllm_json) as f:
        theirs = {(p["shape"], p["tokens"]): p for p in json.load(f)["points"]}
    print("vLLM fused_moe (experts only) time / ours (whole layer): above 1, ours is faster")
    for p in ours:
        t = theirs.get((p["shape"], p["tokens"]))
        if t:
            print(f"  {p['shape']:8} {p['ffn']:7} {p['tokens']:5d}: vllm {t['us_experts']:9.1f} us, "
                  f"ours {p['us_per_layer']:9.1f} us, ratio {t['us_experts'] / p['us_per_layer']:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extract", nargs=2, metavar=("WHEEL", "OUT"))
    ap.add_argument("--run", metavar="DIR")
    ap.add_argument("--compare", nargs=2, metavar=("MOE_GPU_BENCH_JSON", "VLLM_JSON"))
    ap.add_argument("--tokens", default="1,2,4,8,16,32,64,128,256,512,1024,2048,4096")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--output")
    args = ap.parse_args()
    if args.extract:
        extract(*args.extract)
    elif args.compare:
        compare(*args.compare)
    elif args.run:
        run(args.run, [int(t) for t in args.tokens.split(",")], args.iters, args.output)
    else:
        ap.error("give --extract, --run or --compare")


if __name__ == "__main__":
    main()

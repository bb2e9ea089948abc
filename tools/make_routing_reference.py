#!/usr/bin/env python3
"""Reference continuations for per-request routing and SCMoE self-contrast decoding.

For each golden fixture (tests/golden/data/models/{mixtral,qwen2_moe,qwen3_moe,olmoe}) this
script loads the checkpoint in transformers (float32, eager attention), replaces the
routing of every sparse MoE block by one rule, and records greedy continuations into
`routing_reference.json` beside the fixture:

  routing        {"top_k": N}: the N most probable experts, renormalized as the model
                 renormalizes (Mixtral always, the others iff norm_topk_prob);
                 {"top_p": P}: the smallest prefix by probability whose mass exceeds P,
                 raw probabilities (specs/moe_algorithms.md 4.1, all E if none does).
  self_contrast  SCMoE (specs 1.2): a strong pass with the model's own routing and a weak
                 pass where every MoE layer uses only the expert ranked `weak_rank`, weight
                 1.0 where the model renormalizes and its raw probability where not; the
                 next token is the argmax of (1 + beta) s - beta w over the tokens whose s
                 is at least ln(alpha) + max(s), EOS removed when ban_eos (then the best
                 non-EOS token of s if nothing is left).

Everything else of the block (the expert loop, Qwen2-MoE's shared expert and its gate)
is transformers' own. Each step is a full forward without a KV cache; EOS does not stop.

A case is kept only when it is decisive, as the golden script keeps fixtures: every
routing choice of every layer and token clears its boundary (top-k: p[N-1] - p[N]; top-p:
the mass on both sides of P; weak: the ranks r-1, r, r+1) by ROUTE_MARGIN, and every step's
winner beats the runner-up by SCORE_MARGIN (for SCMoE also no token's s lies within
SCORE_MARGIN of the cutoff). A prompt that is not decisive is skipped; a setting left with
fewer than MIN_PROMPTS prompts makes the script fail: the fixture is refused.

Usage:  python3 tools/make_routing_reference.py [--models tests/golden/data/models]
"""

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModelForCausalLM

ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]
N_STEPS = 16
ROUTE_MARGIN = 1e-5
SCORE_MARGIN = 1e-4
MIN_PROMPTS = 2
MAX_PROMPTS = 3

ROUTING = [{"top_k": 1}, {"top_k": 8}, {"top_k": 3}, {"top_p": 0.4}, {"top_p": 0.75}]
SELF_CONTRAST = [
    {"alpha": 0.1, "beta": 0.5, "weak_rank": 2, "ban_eos": False},
    {"alpha": 0.2, "beta": 0.9, "weak_rank": 3, "ban_eos": True},
    {"alpha": 0.05, "beta": 0.3, "weak_rank": 1, "ban_eos": False},
]


class Rule:
    """The routing every patched block applies, and the smallest margin it met."""

    kind = None  # None: the model's own; "top_k", "top_p", "weak"
    value = None
    margin = math.inf


def select(p, renorm):
    """(ids, weights) per token under Rule, in rank order; updates Rule.margin."""
    sp, se = torch.sort(p, dim=-1, descending=True, stable=True)
    E = p.shape[-1]
    sp64 = sp.double()
    out = []
    for t in range(p.shape[0]):
        if Rule.kind == "top_k":
            n = Rule.value
            if n < E:
                Rule.margin = min(Rule.margin, float(sp64[t, n - 1] - sp64[t, n]))
            w = sp[t, :n].clone()
            if renorm:
                w = w / w.sum()
            out.append((se[t, :n], w))
        elif Rule.kind == "top_p":
            P = Rule.value
            c = torch.cumsum(sp64[t], 0)
            over = (c > P).nonzero()
            n = int(over[0]) + 1 if len(over) else E
            Rule.margin = min(Rule.margin, float(c[n - 1] - P) if n <= E and len(over) else math.inf)
            if n >= 2:
                Rule.margin = min(Rule.margin, float(P - c[n - 2]))
            out.append((se[t, :n], sp[t, :n].clone()))
        else:  # weak rank r (1-based)
            r = Rule.value
            if r >= 2:
                Rule.margin = min(Rule.margin, float(sp64[t, r - 2] - sp64[t, r - 1]))
            if r < E:
                Rule.margin = min(Rule.margin, float(sp64[t, r - 1] - sp64[t, r]))
            w = torch.ones(1, dtype=p.dtype) if renorm else sp[t, r - 1 : r].clone()
            out.append((se[t, r - 1 : r], w))
    return out


def patched_forward(self, hidden_states):
    if Rule.kind is None:
        return self._moe_serve_original_forward(hidden_states)
    b, s, h = hidden_states.shape
    x = hidden_states.view(-1, h)
    router_logits = self.gate(x)
    p = F.softmax(router_logits, dim=1, dtype=torch.float)
    renorm = getattr(self, "norm_topk_prob", True)  # Mixtral always renormalizes
    chosen = select(p, renorm)
    out = torch.zeros((b * s, h), dtype=x.dtype)
    # transformers' order: expert by expert, index_add_ of that expert's tokens.
    for e in range(self.num_experts):
        tokens, weights = [], []
        for t, (ids, w) in enumerate(chosen):
            hit = (ids == e).nonzero()
            if len(hit):
                tokens.append(t)
                weights.append(w[int(hit[0])])
        if not tokens:
            continue
        idx = torch.tensor(tokens)
        y = self.experts[e](x[idx]) * torch.stack(weights).to(x.dtype)[:, None]
        out.index_add_(0, idx, y.to(x.dtype))
    if hasattr(self, "shared_expert"):
        out = out + F.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)
    return out.reshape(b, s, h), router_logits


def patch(model):
    n = 0
    for module in model.modules():
        if type(module).__name__.endswith("SparseMoeBlock"):
            module._moe_serve_original_forward = module.forward
            module.forward = patched_forward.__get__(module)
            n += 1
    if n == 0:
        raise SystemExit("no sparse MoE block found to patch")
    return n


@torch.no_grad()
def last_logits(model, ids, kind, value):
    Rule.kind, Rule.value = kind, value
    logits = model(torch.tensor([ids])).logits[0, -1].float()
    Rule.kind, Rule.value = None, None
    return logits


def gap(scores):
    top = torch.topk(scores.double(), 2).values
    return float(top[0] - top[1])


def routing_case(model, ids, routing):
    kind, value = next(iter(routing.items()))
    Rule.margin = math.inf
    seq, min_gap = list(ids), math.inf
    for _ in range(N_STEPS):
        z = last_logits(model, seq, kind, value)
        min_gap = min(min_gap, gap(z))
        seq.append(int(torch.argmax(z)))
    return seq[len(ids):], Rule.margin, min_gap


def self_contrast_case(model, ids, sc, eos_ids):
    Rule.margin = math.inf
    seq, min_gap, min_cut = list(ids), math.inf, math.inf
    for _ in range(N_STEPS):
        s = last_logits(model, seq, None, None)  # T = 0: greedy, scaled by 1
        w = last_logits(model, seq, "weak", sc["weak_rank"])
        cutoff = math.log(sc["alpha"]) + float(s.max())
        keep = s >= torch.tensor(cutoff, dtype=torch.float32)
        score = torch.where(keep, (1 + sc["beta"]) * s - sc["beta"] * w,
                            torch.tensor(-math.inf))
        min_cut = min(min_cut, float((s.double() - cutoff).abs().min()))
        if sc["ban_eos"]:
            for e in eos_ids:
                score[e] = -math.inf
            if not torch.isfinite(score).any():
                score = s.clone()
                for e in eos_ids:
                    score[e] = -math.inf
        finite = score[torch.isfinite(score)]
        if finite.numel() >= 2:
            min_gap = min(min_gap, gap(finite))
        seq.append(int(torch.argmax(score)))
    return seq[len(ids):], Rule.margin, min_gap, min_cut


def finite(x):
    """JSON has no Infinity: a margin no boundary limited (top_k = E, say) is null."""
    return None if math.isinf(x) else x


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="tests/golden/data/models")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    for arch in ARCHS:
        mdir = os.path.join(args.models, arch)
        ref = json.load(open(os.path.join(mdir, "reference.json")))
        model = AutoModelForCausalLM.from_pretrained(
            mdir, dtype=torch.float32, attn_implementation="eager").eval()
        patch(model)
        # The ids the server stops on (and ban_eos bans): generation_config.json's, else
        # config.json's, as engine/model_config.h reads them.
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = model.config.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        eos_ids = [e for e in eos_ids if 0 <= e < model.config.vocab_size]
        prompts = [p["input_ids"] for p in ref["prompts"]]
        cases, refused = [], []

        def collect(setting, run):
            kept = 0
            for ids in prompts:
                if kept == MAX_PROMPTS:
                    break
                result = run(ids)
                route_margin, score_gap = result[1], result[2]
                cut = result[3] if len(result) > 3 else math.inf
                if route_margin < ROUTE_MARGIN or score_gap < SCORE_MARGIN or cut < SCORE_MARGIN:
                    refused.append({"setting": setting, "input_ids": ids,
                                    "route_margin": finite(route_margin),
                                    "score_gap": finite(score_gap), "cutoff_margin": finite(cut)})
                    continue
                case = dict(setting)
                case.update({"input_ids": ids, "ids": result[0],
                             "min_route_margin": finite(route_margin),
                             "min_score_gap": finite(score_gap)})
                if len(result) > 3:
                    case["min_cutoff_margin"] = finite(cut)
                cases.append(case)
                kept += 1
            if kept < MIN_PROMPTS:
                raise SystemExit(f"{arch}: {setting} is decisive on {kept} prompts only "
                                 f"(need {MIN_PROMPTS}); refusing the fixture")

        for routing in ROUTING:
            collect({"kind": "routing", "routing": routing},
                    lambda ids, r=routing: routing_case(model, ids, r))
        for sc in SELF_CONTRAST:
            collect(dict({"kind": "self_contrast"}, **sc),
                    lambda ids, sc=sc: self_contrast_case(model, ids, sc, eos_ids))
        # The plain greedy run through the patched blocks must be the fixture's own.
        for p in ref["prompts"][:1]:
            seq = list(p["input_ids"])
            for _ in range(N_STEPS):
                seq.append(int(torch.argmax(last_logits(model, seq, None, None))))
            if seq[len(p["input_ids"]):] != p["greedy_ids"][:N_STEPS]:
                raise SystemExit(f"{arch}: the unpatched greedy run differs from reference.json")
        out = {
            "generated_by": "python3 tools/make_routing_reference.py",
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__.split("+")[0],
            "model_type": model.config.model_type,
            "eos_token_ids": eos_ids,
            "n_steps": N_STEPS,
            "route_margin_threshold": ROUTE_MARGIN,
            "score_margin_threshold": SCORE_MARGIN,
            "note": "ids: greedy continuation, full forward per step, EOS does not stop; "
                    "routing applies to every token of the sequence in every MoE layer; "
                    "self_contrast: strong = the model's routing, weak = rank weak_rank",
            "cases": cases,
            "skipped_not_decisive": refused,
        }
        with open(os.path.join(mdir, "routing_reference.json"), "w") as f:
            json.dump(out, f, indent=1, allow_nan=False)
        print(f"{arch}: {len(cases)} cases, {len(refused)} prompts skipped", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Train moe-serve's small default model (models/default/).

The default model is a tiny Qwen3-MoE checkpoint in the Hugging Face format
(config.json + model.safetensors + tokenizer.json + ...), loadable by
transformers' AutoModelForCausalLM and used by the server/CLI whenever no
--model is given.  It is trained briefly, on the CPU, on the King James
Version of the Bible (public domain), which this script obtains itself from
Debian's `bible-kjv-text` package (decoded with the `bible` program from the
`bible-kjv` package; both are fetched with `apt-get download` into a
temporary directory and unpacked with `dpkg-deb -x`, nothing is installed).

Typical use (from the repository root):

    python3 tools/train_default_model.py --minutes 15

Steps:
  1. fetch + decode the KJV text (or use --text FILE with a ready text file),
  2. train a byte-level BPE tokenizer (tokenizers library),
  3. train Qwen3MoeForCausalLM from scratch with AdamW (warmup + cosine) for a
     bounded wall time (--minutes) or a fixed number of steps (--steps),
  4. save bf16 safetensors, tokenizer files, generation config and a model
     card (README.md) with samples to --out (default models/default).

Requirements: see tools/requirements.txt (torch, transformers>=4.56,<5,
tokenizers, safetensors, numpy); apt-get and dpkg-deb for step 1.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DEB_TEXT_PKG = "bible-kjv-text"
DEB_PROG_PKG = "bible-kjv"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SIZE_LIMIT_BYTES = 30 * 1000 * 1000
SAMPLE_PROMPTS = [
    "In the beginning",
    "And the king said unto",
    "Blessed are the",
]


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------
# 1. text
# --------------------------------------------------------------------------
def deb_field(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], check=True,
                          capture_output=True, text=True).stdout.strip()


def fetch_kjv(workdir: Path) -> tuple[str, dict]:
    """Download + unpack the two Debian packages, decode the whole Bible.

    Returns (raw text, one verse per line as "Ref text", and source info)."""
    debdir = workdir / "debs"
    debdir.mkdir(parents=True, exist_ok=True)
    log(f"[data] apt-get download {DEB_TEXT_PKG} {DEB_PROG_PKG} into {debdir}")
    r = subprocess.run(["apt-get", "download", DEB_TEXT_PKG, DEB_PROG_PKG],
                       cwd=debdir, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(
            "apt-get download failed (run 'apt-get update' first?):\n" + r.stderr)
    debs = sorted(debdir.glob("*.deb"))
    info = {}
    root = workdir / "root"
    for deb in debs:
        pkg = deb_field(deb, "Package")
        info[pkg] = deb_field(deb, "Version")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    for pkg in (DEB_TEXT_PKG, DEB_PROG_PKG):
        if pkg not in info:
            raise SystemExit(f"package {pkg} missing after download: {debs}")
    bible = root / "usr/bin/bible"
    datadir = root / "usr/lib"
    if not (datadir / "bible.data").exists():
        raise SystemExit(f"{datadir}/bible.data not found in {DEB_TEXT_PKG}")
    log(f"[data] decoding with {bible} (-f: one verse per line)")
    r = subprocess.run([str(bible), "-f", "-p", str(datadir), "gen1:1-rev22:21"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0 or not r.stdout:
        raise SystemExit(f"bible failed (rc={r.returncode}): {r.stderr[:2000]}")
    return r.stdout, info


VERSE_RE = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")


def verses_to_documents(raw: str) -> list[str]:
    """One document per chapter: its verses, one per line, references removed."""
    docs: list[str] = []
    cur_key = None
    cur: list[str] = []
    for line in raw.splitlines():
        line = line.rstrip()
        if not line:
            continue
        m = VERSE_RE.match(line)
        if not m:
            # continuation of a verse (should not happen with -f), keep it
            if cur:
                cur[-1] += " " + line.strip()
            continue
        key = (m.group(1), m.group(2))
        if key != cur_key and cur:
            docs.append("\n".join(cur))
            cur = []
        cur_key = key
        cur.append(m.group(4).strip())
    if cur:
        docs.append("\n".join(cur))
    return docs


# --------------------------------------------------------------------------
# 2. tokenizer
# --------------------------------------------------------------------------
def train_tokenizer(docs: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,  # ids 0, 1, 2
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],  # no token_type_ids
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


# --------------------------------------------------------------------------
# 3. model
# --------------------------------------------------------------------------
def make_config(args, tok):
    from transformers import Qwen3MoeConfig

    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    return Qwen3MoeConfig(
        vocab_size=len(tok),
        hidden_size=args.hidden,
        intermediate_size=args.moe_intermediate * 2,  # unused: every layer is MoE
        moe_intermediate_size=args.moe_intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.head_dim,
        num_experts=args.experts,
        num_experts_per_tok=args.top_k,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        hidden_act="silu",
        max_position_embeddings=1024,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attention_bias=False,
        use_sliding_window=False,
        initializer_range=0.02,
        router_aux_loss_coef=args.aux_coef,
        output_router_logits=False,
        use_cache=True,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=eos,
        dtype="bfloat16",
    )


def lr_at(progress: float, step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    p = min(max(progress, 0.0), 1.0)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * p))


@torch.no_grad()
def evaluate(model, val: torch.Tensor, seq: int, batches: int = 16, bsz: int = 8) -> float:
    model.eval()
    n = (len(val) - 1) // seq
    losses = []
    idx = 0
    for _ in range(batches):
        rows = []
        for _ in range(bsz):
            if idx >= n:
                break
            rows.append(val[idx * seq: idx * seq + seq + 1])
            idx += 1
        if not rows:
            break
        b = torch.stack(rows)
        out = model(input_ids=b[:, :-1])
        logits = out.logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), b[:, 1:].reshape(-1))
        losses.append(loss.item())
    model.train()
    return sum(losses) / max(len(losses), 1)


def generate_samples(model, tok, prompts, max_new_tokens=48, seed=1234):
    out = []
    model.eval()
    for p in prompts:
        enc = tok(p, return_tensors="pt")
        ids = enc.input_ids
        am = enc.attention_mask
        with torch.no_grad():
            g = model.generate(ids, attention_mask=am, max_new_tokens=max_new_tokens, do_sample=False,
                               temperature=None, top_p=None, top_k=None,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
            torch.manual_seed(seed)
            s = model.generate(ids, attention_mask=am, max_new_tokens=max_new_tokens, do_sample=True,
                               temperature=0.8, top_p=0.95, top_k=50,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
        out.append({
            "prompt": p,
            "greedy": tok.decode(g[0], skip_special_tokens=False),
            "sampled": tok.decode(s[0], skip_special_tokens=False),
        })
    return out


# --------------------------------------------------------------------------
# 4. model card
# --------------------------------------------------------------------------
def write_card(out: Path, cfg, meta: dict, samples: list[dict]) -> None:
    def block(s: str) -> str:
        return "```text\n" + s.strip() + "\n```"

    sample_md = []
    for s in samples:
        sample_md.append(f"Prompt `{s['prompt']}`, greedy:\n\n{block(s['greedy'])}\n\n"
                         f"sampled (temperature 0.8, top-p 0.95, top-k 50, seed 1234):\n\n"
                         f"{block(s['sampled'])}\n")
    src = meta["source"]
    card = f"""# moe-serve default model

A deliberately tiny mixture-of-experts language model in the Hugging Face
format. moe-serve uses it whenever no `--model` is given, so that the server,
the CLI and the tests have a real MoE checkpoint to load without any download.
It was trained for a few minutes on a CPU: its continuations read as (King
James style) English, but it knows nothing and is not useful for anything but
exercising the engine.

## Architecture

`Qwen3MoeForCausalLM` (`model_type: qwen3_moe`), loadable with
`transformers.AutoModelForCausalLM.from_pretrained("models/default")`.

| field | value |
| --- | --- |
| hidden_size | {cfg.hidden_size} |
| num_hidden_layers | {cfg.num_hidden_layers} (all MoE) |
| num_attention_heads / num_key_value_heads | {cfg.num_attention_heads} / {cfg.num_key_value_heads} (GQA) |
| head_dim | {cfg.head_dim} |
| num_experts / num_experts_per_tok | {cfg.num_experts} / {cfg.num_experts_per_tok} |
| norm_topk_prob | {str(cfg.norm_topk_prob).lower()} |
| moe_intermediate_size | {cfg.moe_intermediate_size} |
| vocab_size | {cfg.vocab_size} (byte-level BPE) |
| max_position_embeddings | {cfg.max_position_embeddings} |
| rope_theta | {cfg.rope_theta} |
| rms_norm_eps | {cfg.rms_norm_eps} |
| tie_word_embeddings | {str(cfg.tie_word_embeddings).lower()} |
| parameters | {meta['params']:,} total, {meta['active_params']:,} active per token |
| weights | `model.safetensors`, bfloat16, {meta['file_bytes']:,} bytes |

Tokenizer: byte-level BPE (`tokenizers`), {cfg.vocab_size} tokens, trained on
the same text. Special tokens: `<|endoftext|>` (id {meta['eos_id']}; end of
text, also used as padding; there is no BOS token), `<|im_start|>` and
`<|im_end|>` (ids {meta['im_start_id']}, {meta['im_end_id']}) for the ChatML
`chat_template` in `tokenizer_config.json`. The model never saw ChatML in
training. `generation_config.json` stops on `<|endoftext|>` and `<|im_end|>`.

## Data

The King James Version of the Bible (1611; public domain: the Debian
package's copyright file says "The copyright for the King James Version text
of the Bible is expired"), about 4.4 MB of text, 31,102 verses, from Debian's
packages:

- `{DEB_TEXT_PKG}` {src.get(DEB_TEXT_PKG)} (the compressed text, `/usr/lib/bible.data`)
- `{DEB_PROG_PKG}` {src.get(DEB_PROG_PKG)} (the `bible` program, used only to decode it; GPL-2+)

The script fetches both with `apt-get download` into a temporary directory,
unpacks them with `dpkg-deb -x` (nothing is installed), decodes the whole text
with `bible -f -p DIR gen1:1-rev22:21`, strips verse references and makes one
document per chapter (verses one per line; {meta['n_docs']} chapters, documents
separated by `<|endoftext|>`). Every {meta['val_every']}th chapter is held out
for validation: {meta['train_tokens']:,} training tokens, {meta['val_tokens']:,}
validation tokens.

## Training

Command (from the repository root):

```sh
{meta['command']}
```

- torch {meta['torch']} on the CPU ({meta['threads']} thread{'s' if meta['threads'] != 1 else ''}), transformers {meta['transformers']}, tokenizers {meta['tokenizers']}, Python {meta['python']}
- random windows of {meta['seq']} tokens, batch {meta['batch']}, seed {meta['seed']}
- AdamW (betas 0.9/0.95, weight decay 0.1), peak lr {meta['lr']}, {meta['warmup']} warmup steps then cosine to {meta['min_lr']}
  over the wall-time budget; gradient clipping 1.0; router load-balancing loss coefficient {cfg.router_aux_loss_coef}
- trained in float32, saved in bfloat16
- **{meta['steps']} steps** ({meta['tokens_seen']:,} tokens, {meta['epochs']:.2f} epochs) in **{meta['train_seconds']/60:.1f} minutes**
- final training loss (mean of the last 50 steps): **{meta['final_train_loss']:.3f}**
- validation loss: **{meta['val_loss']:.3f}** (perplexity {math.exp(meta['val_loss']):.1f}) in float32, {meta['val_loss_bf16']:.3f} after the cast to bfloat16

## Samples

Generated by the training script from the saved bfloat16 checkpoint, 48 new tokens:

{chr(10).join(sample_md)}
## Remaking it

```sh
apt-get update                       # apt-get download needs the package lists
pip install -r tools/requirements.txt
{meta['command']}   # writes models/default/
```

The run is bounded by wall time, so the number of steps (and the weights)
depend on the machine's speed and load. For a run that does exactly the same
number of steps, pass `--steps {meta['steps']}` instead of `--minutes`; with the
same seed, thread count and library versions it should give the same weights.
`--threads` sets torch's CPU threads (default 2); on a busy 2-core machine one
thread was much faster than two, hence `--threads 1` above. `--text FILE`
skips the download and trains on a ready text file in the format that
`bible -f` prints (`Ge1:1 In the beginning ...`, one verse per line; write one
with `--keep-text FILE`). `--help` lists the model-size flags.

`transformers` loads the weights in float32 unless asked otherwise
(`from_pretrained(..., dtype="auto")` keeps bfloat16).
"""
    (out / "README.md").write_text(card)


# --------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models/default", help="output directory")
    ap.add_argument("--minutes", type=float, default=15.0, help="training wall-time budget")
    ap.add_argument("--steps", type=int, default=0,
                    help="train exactly this many steps instead of --minutes")
    ap.add_argument("--text", default=None,
                    help="use this KJV text file (bible -f output) instead of downloading")
    ap.add_argument("--keep-text", default=None, help="also write the decoded text here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--moe-intermediate", type=int, default=256)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--aux-coef", type=float, default=0.01)
    ap.add_argument("--log-every", type=int, default=50)
    args = ap.parse_args()

    import tokenizers
    import transformers
    from transformers import GenerationConfig, Qwen3MoeForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    t_start = time.time()
    out = Path(args.out)

    # 1. text -------------------------------------------------------------
    with tempfile.TemporaryDirectory(prefix="kjv-") as td:
        if args.text:
            raw = Path(args.text).read_text()
            source = {DEB_TEXT_PKG: "(from --text)", DEB_PROG_PKG: "(from --text)"}
            # keep the versions recorded next to a previous run, if any
            prev = out / "training_meta.json"
            if prev.exists():
                source = json.loads(prev.read_text()).get("source", source)
        else:
            raw, source = fetch_kjv(Path(td))
    if args.keep_text:
        Path(args.keep_text).write_text(raw)
    docs = verses_to_documents(raw)
    n_verses = sum(d.count("\n") + 1 for d in docs)
    log(f"[data] {len(raw):,} bytes, {n_verses:,} verses, {len(docs):,} chapters; source {source}")
    if n_verses < 30000:
        raise SystemExit("the decoded text looks incomplete")

    # 2. tokenizer --------------------------------------------------------
    tok = train_tokenizer(docs, args.vocab)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    log(f"[tok] vocab {len(tok)}; eos id {eos}")
    val_every = 50
    train_ids: list[int] = []
    val_ids: list[int] = []
    enc = tok.backend_tokenizer.encode_batch(docs)
    for i, e in enumerate(enc):
        (val_ids if i % val_every == val_every - 1 else train_ids).extend(e.ids + [eos])
    train = torch.tensor(train_ids, dtype=torch.long)
    val = torch.tensor(val_ids, dtype=torch.long)
    log(f"[tok] {len(train):,} train tokens, {len(val):,} val tokens "
        f"({len(raw) / (len(train) + len(val)):.2f} bytes/token)")

    # 3. model ------------------------------------------------------------
    cfg = make_config(args, tok)
    model = Qwen3MoeForCausalLM._from_config(cfg, attn_implementation="sdpa",
                                             dtype=torch.float32)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    expert_params = sum(p.numel() for n_, p in model.named_parameters() if ".experts." in n_)
    active = n_params - expert_params + expert_params * args.top_k // args.experts
    log(f"[model] {n_params:,} parameters ({active:,} active per token), "
        f"~{2 * n_params / 1e6:.1f} MB in bf16")
    if 2 * n_params >= SIZE_LIMIT_BYTES:
        raise SystemExit("model too large for the 30 MB budget")

    decay, no_decay = [], []
    for n_, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in n_ else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    gen = torch.Generator().manual_seed(args.seed)
    budget = args.minutes * 60.0
    step = 0
    recent: list[float] = []
    t0 = time.time()
    log(f"[train] {'%d steps' % args.steps if args.steps else '%.1f minutes' % args.minutes}, "
        f"batch {args.batch} x {args.seq}")
    while True:
        elapsed = time.time() - t0
        if args.steps:
            if step >= args.steps:
                break
            progress = step / args.steps
        else:
            if elapsed >= budget:
                break
            progress = elapsed / budget
        lr = lr_at(progress, step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(train) - args.seq - 1, (args.batch,), generator=gen)
        batch = torch.stack([train[s: s + args.seq + 1] for s in starts.tolist()])
        outp = model(input_ids=batch[:, :-1], output_router_logits=True)
        logits = outp.logits
        lm_loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(), batch[:, 1:].reshape(-1))
        loss = lm_loss + args.aux_coef * outp.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        recent.append(lm_loss.item())
        recent = recent[-50:]
        if step % args.log_every == 0 or step == 1:
            el = time.time() - t0
            log(f"step {step:6d}  loss {lm_loss.item():.4f}  avg50 {sum(recent)/len(recent):.4f}  "
                f"aux {outp.aux_loss.item():.3f}  lr {lr:.2e}  "
                f"{step * args.batch * args.seq / el:,.0f} tok/s  {el/60:.1f} min")
        if step % 1000 == 0:
            log(f"[eval] step {step} val loss {evaluate(model, val, args.seq):.4f}")
    train_seconds = time.time() - t0
    final_train = sum(recent) / len(recent)
    val_loss = evaluate(model, val, args.seq)
    log(f"[train] done: {step} steps in {train_seconds/60:.1f} min; "
        f"train loss {final_train:.4f}; val loss {val_loss:.4f}")

    # 4. save -------------------------------------------------------------
    if out.exists():
        for f in out.iterdir():
            if f.is_file():
                f.unlink()
    out.mkdir(parents=True, exist_ok=True)
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.config.use_cache = True
    model.save_pretrained(out, safe_serialization=True)
    # chat_template inside tokenizer_config.json (not chat_template.jinja), so a
    # reader of tokenizer_config.json alone (the C++ server) finds it too
    tok.save_pretrained(out, save_jinja_files=False)
    gc = GenerationConfig(
        eos_token_id=[eos, tok.convert_tokens_to_ids("<|im_end|>")],
        pad_token_id=eos,
        do_sample=True, temperature=0.8, top_p=0.95, top_k=50,
        max_new_tokens=128,
    )
    gc.save_pretrained(out)
    for f in out.iterdir():
        if f.is_file():
            f.chmod(0o644)
    file_bytes = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    total_bytes = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    log(f"[save] {out}: safetensors {file_bytes:,} bytes, directory {total_bytes:,} bytes")
    if total_bytes >= SIZE_LIMIT_BYTES:
        raise SystemExit("saved model is over 30 MB")

    # reload exactly as a user would and sample
    from transformers import AutoModelForCausalLM, AutoTokenizer
    m2 = AutoModelForCausalLM.from_pretrained(out)
    t2 = AutoTokenizer.from_pretrained(out)
    val_bf16 = evaluate(m2, val, args.seq)
    samples = generate_samples(m2, t2, SAMPLE_PROMPTS)
    for s in samples:
        log(f"[sample] {s['prompt']!r}\n  greedy : {s['greedy']!r}\n  sampled: {s['sampled']!r}")

    cmd_args = [a for a in sys.argv[1:]]
    meta = {
        "source": source,
        "n_docs": len(docs),
        "val_every": val_every,
        "train_tokens": len(train),
        "val_tokens": len(val),
        "params": n_params,
        "active_params": active,
        "file_bytes": file_bytes,
        "eos_id": eos,
        "im_start_id": t2.convert_tokens_to_ids("<|im_start|>"),
        "im_end_id": t2.convert_tokens_to_ids("<|im_end|>"),
        "command": "python3 tools/train_default_model.py " + " ".join(cmd_args),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "seq": args.seq,
        "batch": args.batch,
        "seed": args.seed,
        "lr": args.lr,
        "min_lr": args.min_lr,
        "warmup": args.warmup,
        "steps": step,
        "tokens_seen": step * args.batch * args.seq,
        "epochs": step * args.batch * args.seq / len(train),
        "train_seconds": train_seconds,
        "final_train_loss": final_train,
        "val_loss": val_loss,
        "val_loss_bf16": val_bf16,
        "total_seconds": time.time() - t_start,
    }
    write_card(out, model.config, meta, samples)
    (out / "training_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    log(f"[done] wrote {out} in {(time.time() - t_start)/60:.1f} min total")
    return 0


if __name__ == "__main__":
    sys.exit(main())

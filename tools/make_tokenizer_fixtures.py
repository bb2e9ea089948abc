#!/usr/bin/env python3
"""Builds the tokenizer golden fixtures under tests/golden/data/tokenizers/.

Offline and deterministic: the corpus is synthesized from word lists in this file and
lines of the Python standard library, and the tokenizers are trained with the Hugging Face
`tokenizers` library (the reference implementation the C++ tokenizer is compared with).

Writes:
  corpus.txt               entries without a newline, one per line
  corpus_multiline.jsonl   entries that contain \\n or \\r, one JSON string per line
  <name>/tokenizer.json, <name>/tokenizer_config.json
  <name>/golden.jsonl      one JSON object per corpus entry:
      {"text", "ids" (add_special_tokens=False), "ids_special" (=True),
       "decoded" (decode(ids, skip_special_tokens=False)),
       "decoded_skip" (decode(ids, skip_special_tokens=True), only when it differs)}

Tokenizers:
  bytelevel        Qwen2 style: NFC, Split(Qwen2 regex) + ByteLevel(use_regex=false),
                   ByteLevel decoder, merges as [a, b] pairs.
  gpt2             ByteLevel(add_prefix_space=false, use_regex=true), ignore_merges,
                   merges as "a b" strings.
  spbpe            Llama / Mixtral style: byte_fallback BPE, legacy normalizer
                   Prepend("▁") + Replace(" ", "▁"), TemplateProcessing adding <s>,
                   decoder Replace + ByteFallback + Fuse + Strip.
  spbpe_metaspace  the same model with the Metaspace pre-tokenizer
                   (prepend_scheme "first") and a ByteFallback + Metaspace decoder.

Usage: python3 tools/make_tokenizer_fixtures.py [--out DIR]
"""

import argparse
import glob
import json
import os
import random
import sys

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
VOCAB_SIZE = 4000

WORDS = {
    "en": "the quick brown fox jumps over lazy dog model token expert router layer weight "
          "attention cache batch stream server request latency throughput memory kernel "
          "don't it's we're they've I'm you'll she'd HELLO World Tokenizer GPU".split(),
    "fr": "café crème brûlée élève garçon naïve Noël où déjà très français hôpital "
          "forêt être à côté ça œuvre".split(),
    "de": "Straße Grüße Mädchen Übung schön Fußball größer Äpfel Öl Zürich über".split(),
    "es": "niño señor mañana corazón acción pingüino ¿Qué ¡Hola! está año".split(),
    "pl": "zażółć gęślą jaźń Łódź źdźbło".split(),
    "vi": "Tiếng Việt người thương nhớ đường phố Hà Nội".split(),
    "ru": "Привет мир модель токен эксперт сервер быстрый ёжик съешь щётка "
          "Москва ЮНЕСКО".split(),
    "el": "Καλημέρα κόσμε μοντέλο ελληνικά ψυχή Ωμέγα άλφα".split(),
    "ar": "مرحبا بالعالم نموذج اللغة العربية كتاب مدرسة".split(),
    "he": "שלום עולם מודל שפה".split(),
    "hi": "नमस्ते दुनिया भाषा मॉडल हिन्दी".split(),
    "th": "สวัสดีครับ ภาษาไทย โมเดล".split(),
    "zh": "你好 世界 模型 分词器 专家 混合 推理 服务器 中文 测试 繁體字 龍".split(),
    "ja": "こんにちは 世界 トークナイザー 日本語 カタカナ ひらがな 東京".split(),
    "ko": "안녕하세요 세계 모델 한국어 토크나이저".split(),
}
EMOJI = ["😀", "😂", "🤖", "🚀", "❤️", "👍", "👍🏽", "👋🏿", "🧑🏻‍💻", "👨‍👩‍👧‍👦",
         "👩‍❤️‍💋‍👨", "🏳️‍🌈", "🇩🇪", "🇯🇵", "1️⃣", "#️⃣", "✨", "🔥", "🦀", "🐍",
         "☕", "⚡", "🙏🏼", "🤷‍♀️", "🧜🏾‍♂️", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟘𝟙𝟚"]
SPECIAL_SNIPPETS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>", "<unk>", "<tool_call>",
    "<mask>", "<|user|>", "Zürich", "<|endof", "< s>", "<s >", "<0x41>", "▁", "▁▁x",
    "<<s>>", "</s></s>", "<|im_start|>system\nYou are helpful.<|im_end|>\n",
]
WHITESPACE = [" ", "  ", "   ", "    ", "\t", "\t\t", " \t ", "\u00a0", "\u3000", "\u2003",
              "\u2009", "\u200b"]
NORMALIZATION = ["e\u0301", "A\u030a", "ﬁ", "ﬂ", "Ｆｕｌｌｗｉｄｔｈ", "x²", "①", "½",
                 "Å", "Ω", "\u1e9b\u0323", "ｶﾀｶﾅ", "한\u1100\u1161"]


def python_code_lines(rng, count):
    files = sorted(glob.glob("/usr/lib/python3*/[a-z]*.py"))
    lines = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                lines.extend(l.rstrip("\n") for l in f if l.strip() and len(l) < 80)
        except (OSError, UnicodeDecodeError):
            continue
    if not lines:
        sys.exit("no Python standard library sources found under /usr/lib/python3*")
    picked = [lines[rng.randrange(len(lines))] for _ in range(count)]
    out = []
    for i, line in enumerate(picked):
        if i % 7 == 0:
            line = line.replace("    ", "\t")
        out.append(line)
    # Multi-line code blocks.
    for _ in range(count // 12):
        start = rng.randrange(len(lines) - 4)
        out.append("\n".join(lines[start:start + rng.randint(2, 4)]))
    return out


def sentence(rng, langs, n):
    return " ".join(rng.choice(WORDS[rng.choice(langs)]) for _ in range(n))


def number(rng):
    kind = rng.randrange(6)
    if kind == 0:
        return str(rng.randrange(10 ** rng.randint(1, 25)))
    if kind == 1:
        return f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f}"
    if kind == 2:
        return f"{rng.randint(1900, 2100)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if kind == 3:
        return f"+1 ({rng.randint(100, 999)}) {rng.randint(100, 999)}-{rng.randint(0, 9999):04d}"
    if kind == 4:
        return f"{rng.randint(0, 10**9):,}"
    return "0x" + "".join(rng.choice("0123456789abcdefABCDEF") for _ in range(rng.randint(2, 16)))


def build_corpus():
    rng = random.Random(20240601)
    all_langs = list(WORDS)
    entries = ["", " ", "\n", "  \n\n  ", "a", "Hello world", "hello world!", "I'M HERE",
               "DON'T 'S 'Ll 'vE", "a\r\nb", "\r\n", "\t", "    indented", "trailing   ",
               "ｈｅｌｌｏ", "<s>", "</s>", "<|endoftext|>", "<|endoftext|><|endoftext|>",
               " <mask> ", "x <mask>y", "<tool_call>{\"name\": \"f\"}</tool_call>",
               "x\u0085y", "a\u180eb", "a" + " " * 300 + "b", "nul\x00byte", "\u2028para\u2029",
               "\U0010fffd\ue000", "\ufeffbom", "word<|endoftext|>word", "Zürichsee Zürich"]
    entries += python_code_lines(rng, 560)
    for _ in range(640):
        langs = rng.sample(all_langs, rng.randint(1, 3))
        s = sentence(rng, langs, rng.randint(1, 8))
        if rng.random() < 0.3:
            s = s.capitalize() + rng.choice([".", "?", "!", "...", " —", ":", ";", "»", "\""])
        entries.append(s)
    for _ in range(200):
        parts = [rng.choice(EMOJI) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.6:
            parts.insert(rng.randrange(len(parts) + 1), sentence(rng, all_langs, 2))
        entries.append(rng.choice(["", " "]).join(parts))
    for _ in range(150):
        entries.append(" ".join(number(rng) if rng.random() < 0.6 else sentence(rng, ["en", "ru", "zh"], 1)
                                for _ in range(rng.randint(1, 4))))
    for _ in range(150):
        pieces = []
        for _ in range(rng.randint(2, 5)):
            pieces.append(sentence(rng, all_langs, rng.randint(1, 3)))
            pieces.append(rng.choice(WHITESPACE + ["\n", "\n\n", " \n", "\r\n", "\n  ", "\t\n"]))
        entries.append("".join(pieces))
    for _ in range(150):
        pieces = []
        for _ in range(rng.randint(1, 3)):
            pieces.append(sentence(rng, all_langs, rng.randint(0, 3)))
            pieces.append(rng.choice(SPECIAL_SNIPPETS))
        entries.append(rng.choice(["", " "]).join(pieces))
    for _ in range(80):
        entries.append(sentence(rng, ["en", "fr", "de"], 2) + rng.choice(NORMALIZATION) +
                       rng.choice(["", " ", "x"]) + rng.choice(NORMALIZATION))
    for _ in range(240):  # Short single-line entries: words, numbers, punctuation.
        entries.append(rng.choice([sentence(rng, all_langs, 1), number(rng), rng.choice(EMOJI)]) +
                       rng.choice(["", " ", ",", ".", "!", "?", ":", "-", "'s", "()", "\"", "..."]))
    for _ in range(60):
        s = sentence(rng, ["en"], rng.randint(2, 6))
        entries.append("".join(c.upper() if rng.random() < 0.4 else c for c in s) +
                       rng.choice(["'s", "'T", "'RE", "'ve", "'M", "'ll", "'D", "'x"]))
    seen, unique = set(), []
    for e in entries:
        if e not in seen:
            seen.add(e)
            unique.append(e)
    return unique


def train_bytelevel(corpus, use_split_regex):
    tok = Tokenizer(models.BPE(ignore_merges=not use_split_regex))
    if use_split_regex:
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] if use_split_regex else ["<|endoftext|>"]
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE if use_split_regex else 2500,
                                  special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    if use_split_regex:
        tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=False),
                        AddedToken("</tool_call>", special=False, normalized=False),
                        AddedToken("Zürich", special=False, normalized=True)])
        tok.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True, normalized=False)])
    return json.loads(tok.to_str())


def train_spbpe(corpus):
    """Returns the Llama-style tokenizer.json as a dict (legacy normalizer)."""
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    # Keep only the 160 most frequent characters (ties by code point) so that rarer ones
    # (CJK, emoji, ...) exercise byte fallback. Chosen here rather than by the trainer's
    # limit_alphabet, which breaks ties in hash order and is not reproducible.
    counts = {}
    for entry in corpus:
        for c in entry.replace(" ", "▁"):
            counts[c] = counts.get(c, 0) + 1
    alphabet = sorted(counts, key=lambda c: (-counts[c], c))[:160]
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE - 256, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=alphabet, limit_alphabet=len(alphabet),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    data = json.loads(tok.to_str())
    trained = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {}
    for name in ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]:
        vocab[name] = len(vocab)
    for name, _ in trained:
        if name not in vocab:
            vocab[name] = len(vocab)
    data["model"]["vocab"] = vocab
    # Legacy "a b" merge strings, as Llama / Mixtral tokenizer.json files ship them.
    data["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in data["model"]["merges"]]
    data["added_tokens"] = [
        {"id": vocab[name], "content": name, "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": True} for name in ["<unk>", "<s>", "</s>"]]
    data["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    data["pre_tokenizer"] = None
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [vocab["<s>"]], "tokens": ["<s>"]}}}
    data["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return data


def spbpe_metaspace(base):
    data = json.loads(json.dumps(base))
    data["normalizer"] = None
    data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                             "split": True}
    data["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "ByteFallback"},
        {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True}]}
    user = len(data["model"]["vocab"])
    data["added_tokens"].append({"id": user, "content": "<|user|>", "single_word": False,
                                 "lstrip": False, "rstrip": True, "normalized": False,
                                 "special": True})
    return data


def write_tokenizer(out_dir, name, data, config, corpus):
    tdir = os.path.join(out_dir, name)
    os.makedirs(tdir, exist_ok=True)
    text = json.dumps(data, ensure_ascii=False, indent=None, separators=(",", ":"))
    tok = Tokenizer.from_str(text)  # The reference the goldens come from.
    with open(os.path.join(tdir, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(tdir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)
    with open(os.path.join(tdir, "golden.jsonl"), "w", encoding="utf-8") as f:
        for entry in corpus:
            ids = tok.encode(entry, add_special_tokens=False).ids
            row = {"text": entry, "ids": ids,
                   "ids_special": tok.encode(entry, add_special_tokens=True).ids,
                   "decoded": tok.decode(ids, skip_special_tokens=False)}
            skipped = tok.decode(ids, skip_special_tokens=True)
            if skipped != row["decoded"]:
                row["decoded_skip"] = skipped
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "..", "tests", "golden", "data", "tokenizers"))
    args = parser.parse_args()
    out = os.path.normpath(args.out)
    os.makedirs(out, exist_ok=True)
    corpus = build_corpus()
    with open(os.path.join(out, "corpus.txt"), "w", encoding="utf-8", newline="") as f:
        f.writelines(e + "\n" for e in corpus if "\n" not in e and "\r" not in e)
    with open(os.path.join(out, "corpus_multiline.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in corpus if "\n" in e or "\r" in e)

    write_tokenizer(out, "bytelevel", train_bytelevel(corpus, True),
                    {"tokenizer_class": "Qwen2TokenizerFast", "bos_token": None,
                     "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                     "add_bos_token": False}, corpus)
    write_tokenizer(out, "gpt2", train_bytelevel(corpus, False),
                    {"tokenizer_class": "GPT2TokenizerFast", "bos_token": "<|endoftext|>",
                     "eos_token": "<|endoftext|>"}, corpus)
    sp = train_spbpe(corpus)
    llama_config = {"tokenizer_class": "LlamaTokenizerFast", "add_bos_token": True,
                    "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                    "unk_token": "<unk>", "legacy": True}
    write_tokenizer(out, "spbpe", sp, llama_config, corpus)
    write_tokenizer(out, "spbpe_metaspace", spbpe_metaspace(sp), dict(llama_config, legacy=False), corpus)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    print(f"{len(corpus)} corpus entries, {total / 1e6:.2f} MB under {out}")


if __name__ == "__main__":
    main()

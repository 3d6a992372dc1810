#!/usr/bin/env python3
"""Generate a deterministic, weight-like model directory for benchmarks.

    gen_weights.py OUT_DIR [--size-mib N] [--seed S]

Writes valid safetensors shards (BF16 and F32), model.safetensors.index.json,
config.json, tokenizer.json (a few MiB of BPE-style vocab and merges) and
vocab.txt. The same arguments always give the same bytes on the same numpy
version.

Why not urandom: compressors are judged on how close to "barely compressible"
real weights are. i.i.d. random bytes don't compress at all, while naive
synthetic floats compress too well. Gaussian values (std ~0.02, with a
per-row scale spread, as trained layers have) encoded as real IEEE bytes give
gzip -9 ratios of about 93 % for F32 and about 80 % for BF16; the mix below
(65 % F32, 35 % BF16 of the weight bytes, plus ~1 % text) lands near 88 %
for the whole directory, close to the ~91 % measured on a real model tar.
"""

import argparse
import json
import os
import random
import sys

import numpy as np

MIB = 1 << 20
HIDDEN = 2048
# Fraction of the weight bytes stored as BF16; the rest is F32.
BF16_SHARE = 0.35
# numpy draws are generated and written in blocks of this many elements,
# so memory stays flat whatever the size.
BLOCK = 4 << 20


def layer_tensors(layer):
    """(name, rows, cols) of one transformer block, in checkpoint order."""
    p = f"model.layers.{layer}."
    h, f = HIDDEN, 4 * HIDDEN
    return [
        (p + "input_layernorm.weight", 1, h),
        (p + "mlp.down_proj.weight", h, f),
        (p + "mlp.gate_proj.weight", f, h),
        (p + "mlp.up_proj.weight", f, h),
        (p + "post_attention_layernorm.weight", 1, h),
        (p + "self_attn.k_proj.weight", h, h),
        (p + "self_attn.o_proj.weight", h, h),
        (p + "self_attn.q_proj.weight", h, h),
        (p + "self_attn.v_proj.weight", h, h),
    ]


def plan_shard(budget, itemsize, first_layer):
    """Tensors filling exactly `budget` data bytes (the last one is cut short in rows)."""
    out, used, layer = [], 0, first_layer
    while used < budget:
        for name, rows, cols in layer_tensors(layer):
            room = (budget - used) // (cols * itemsize)
            if room == 0:
                # Pad to the exact budget with a 1-D tensor.
                rest = (budget - used) // itemsize
                if rest:
                    out.append((f"model.pad.{layer}", (rest,)))
                    used += rest * itemsize
                return out, layer + 1
            rows = min(rows, room)
            shape = (cols,) if rows == 1 and name.endswith("norm.weight") else (rows, cols)
            out.append((name, shape))
            used += rows * cols * itemsize
            if used >= budget:
                return out, layer + 1
        layer += 1
    return out, layer


def to_bf16(x):
    """float32 -> bf16 bits, round to nearest even (what torch does)."""
    u = x.view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype("<u2")


def tensor_bytes(rng, name, n, dtype, cols):
    """Yield the little-endian bytes of a tensor of n elements, block by block."""
    is_norm = "norm" in name
    left = n
    while left:
        k = min(left, BLOCK - BLOCK % cols if cols <= BLOCK else BLOCK)
        x = rng.standard_normal(k, dtype=np.float32)
        if is_norm:
            # LayerNorm gains sit near 1.0, as in trained models.
            x = np.float32(1.0) + x * np.float32(0.05)
        else:
            # Per-row scale spread (lognormal): layers and channels differ in scale.
            rows = max(1, k // cols)
            scale = np.float32(0.02) * np.exp(
                np.float32(0.7) * rng.standard_normal(rows, dtype=np.float32)
            )
            if rows * cols == k:
                x = (x.reshape(rows, cols) * scale[:, None]).ravel()
            else:
                x *= scale[0]
        if dtype == "BF16":
            yield to_bf16(x).tobytes()
        else:
            yield x.astype("<f4", copy=False).tobytes()
        left -= k


def write_safetensors(path, tensors, dtype, seed):
    itemsize = 2 if dtype == "BF16" else 4
    header, off = {}, 0
    for name, shape in tensors:
        n = int(np.prod(shape))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n * itemsize]}
        off += n * itemsize
    header["__metadata__"] = {"format": "pt"}
    hjson = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    hjson += b" " * (-len(hjson) % 8)  # safetensors pads the header to 8 bytes
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(len(hjson).to_bytes(8, "little"))
        f.write(hjson)
        for name, shape in tensors:
            for b in tensor_bytes(rng, name, int(np.prod(shape)), dtype, shape[-1]):
                f.write(b)
    return off


def make_vocab(rnd, n):
    """BPE-looking tokens: syllable strings, some with the GPT-2 space marker."""
    cons = "bcdfghjklmnprstvwz"
    vow = "aeiouy"
    seen, vocab = set(), []
    for c in range(256):  # byte-level base alphabet first, like GPT-2
        t = chr(c + 256) if c < 33 or 126 < c < 161 else chr(c)
        if t not in seen:
            seen.add(t)
            vocab.append(t)
    while len(vocab) < n:
        t = "".join(rnd.choice(cons) + rnd.choice(vow) for _ in range(rnd.randint(1, 4)))
        if rnd.random() < 0.3:
            t = t[:-1]
        if rnd.random() < 0.5:
            t = "\u0120" + t
        elif rnd.random() < 0.1:
            t = t.capitalize()
        if t not in seen:
            seen.add(t)
            vocab.append(t)
    return vocab


def write_text_files(out, rnd, tok_bytes, vocab_bytes):
    # ~48 bytes of indented JSON per vocab entry plus its merge line.
    n = max(300, tok_bytes // 48)
    vocab = make_vocab(rnd, n)
    merges = []
    for t in vocab[256:]:
        cut = rnd.randint(1, max(1, len(t) - 1))
        merges.append(f"{t[:cut]} {t[cut:]}")
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": n + i, "content": s, "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True}
            for i, s in enumerate(["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"])
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel"},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": {t: i for i, t in enumerate(vocab)},
            "merges": merges,
        },
    }
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, indent=2, ensure_ascii=False)
    # vocab.txt: one token per line (BERT style), as many as fit the budget.
    with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8") as f:
        written = 0
        for t in vocab:
            line = t.lstrip("\u0120") + "\n"
            written += len(line.encode())
            if written > vocab_bytes:
                break
            f.write(line)
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--size-mib", type=float, default=400)
    ap.add_argument("--seed", type=int, default=20240601)
    a = ap.parse_args()

    total = int(a.size_mib * MIB)
    os.makedirs(a.out, exist_ok=True)
    rnd = random.Random(a.seed)

    # Text files: a few MiB at the default size, scaled down for small runs.
    tok_bytes = min(4 * MIB, max(64 << 10, total // 100))
    vocab_bytes = min(1 * MIB, max(16 << 10, total // 400))
    n_vocab = write_text_files(a.out, rnd, tok_bytes, vocab_bytes)

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": 4 * HIDDEN,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "rms_norm_eps": 1e-05,
        "torch_dtype": "bfloat16",
        "vocab_size": n_vocab + 4,
        "tie_word_embeddings": False,
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    used = sum(os.path.getsize(os.path.join(a.out, p)) for p in os.listdir(a.out))
    weights = max(0, total - used - (64 << 10))  # leave room for headers and the index
    bf16 = int(weights * BF16_SHARE)
    shards = [("BF16", bf16 // 2), ("BF16", bf16 - bf16 // 2),
              ("F32", (weights - bf16) // 2), ("F32", weights - bf16 - (weights - bf16) // 2)]
    n = len(shards)
    weight_map, layer, data_bytes = {}, 0, 0
    for i, (dtype, budget) in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        tensors, layer = plan_shard(budget, 2 if dtype == "BF16" else 4, layer)
        data_bytes += write_safetensors(os.path.join(a.out, fname), tensors, dtype, a.seed + 1 + i)
        for name, _ in tensors:
            weight_map[name] = fname
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": data_bytes}, "weight_map": weight_map},
                  f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())

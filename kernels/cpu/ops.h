// Dense CPU reference kernels of the transformer block: linear layers through BLAS,
// RMSNorm, rotary embeddings, SwiGLU. fp32. Glossary: T tokens, H hidden, D head dim.
#pragma once

#include <cstdint>

namespace moe::kernels {

// y[M, N] = x[M, K] * w[N, K]^T (+ bias[N]); w in the PyTorch nn.Linear layout.
void Linear(const float* x, const float* w, const float* bias, int m, int n, int k, float* y);

// y[rows, n] = x[rows, n] / sqrt(mean(x^2) + eps) * weight[n], per row (in place allowed).
void RmsNorm(const float* x, const float* weight, int rows, int n, float eps, float* y);

struct RopeParams {
  float* x = nullptr;                  // [T, num_heads, head_dim], rotated in place
  const int32_t* positions = nullptr;  // [T]
  int num_tokens = 0;                  // T
  int num_heads = 0;
  int head_dim = 0;       // D, even
  int rotary_dim = 0;     // leading dims rotated; D for full rotary
  float theta = 10000.f;  // rope_theta
};

// Rotary embedding in the "rotate_half" (GPT-NeoX) layout that Hugging Face Llama-family
// models use: pairs (i, i + rotary_dim/2), inv_freq[i] = 1 / theta^(2i / rotary_dim).
void Rope(const RopeParams& p);

// out[rows, I] = silu(gate_up[:, :I]) * gate_up[:, I:2I].
void SiluMul(const float* gate_up, int rows, int inter, float* out);

// x[i] += y[i], n elements.
void AddInPlace(float* x, const float* y, int64_t n);

// x[i] = clamp(x[i], -limit, limit) (OLMoE clip_qkv).
void Clamp(float* x, int64_t n, float limit);

}  // namespace moe::kernels

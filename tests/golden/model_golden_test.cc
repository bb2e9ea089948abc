// The CPU engine against Hugging Face transformers (tools/make_golden_models.py): fp32
// teacher-forced logits per position within 1e-5 relative L2, identical 32-token greedy
// continuations, and the same results when prompts share one flat batch.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/checkpoint.h"
#include "engine/loader.h"
#include "engine/safetensors.h"
#include "engine/self_contrast.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "scheduler/batch_runner.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using testing::HasSubstr;

constexpr double kMaxRelL2 = 1e-5;

fs::path ModelsDir() { return fs::path(MOE_SOURCE_DIR) / "tests/golden/data/models"; }

struct Prompt {
  std::string text;
  std::vector<int32_t> ids;
  std::vector<int32_t> greedy;
  std::vector<float> logits;  // [T, V]
};

struct Fixture {
  LoadedModel lm;
  std::vector<Prompt> prompts;
};

nlohmann::json ReadJson(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

// The model directory and the directory of its reference.json/.safetensors: the same for
// the tiny fixtures, tests/golden/data/default_model for models/default.
struct FixtureDirs {
  fs::path model, reference;
};

FixtureDirs DirsOf(const std::string& name) {
  if (name == "default") {
    return {fs::path(MOE_SOURCE_DIR) / "models/default",
            fs::path(MOE_SOURCE_DIR) / "tests/golden/data/default_model"};
  }
  return {ModelsDir() / name, ModelsDir() / name};
}

Fixture LoadFixture(const std::string& name) {
  Fixture f;
  const FixtureDirs dirs = DirsOf(name);
  auto lm = LoadModelDir(dirs.model.string());
  EXPECT_TRUE(lm.ok()) << lm.status();
  if (!lm.ok()) return f;
  f.lm = std::move(*lm);
  const nlohmann::json ref = ReadJson(dirs.reference / "reference.json");
  auto logits_file = SafetensorsFile::Open((dirs.reference / "reference.safetensors").string());
  EXPECT_TRUE(logits_file.ok()) << logits_file.status();
  const int V = f.lm.config.vocab_size;
  for (size_t i = 0; i < ref["prompts"].size(); ++i) {
    const auto& jp = ref["prompts"][i];
    Prompt p;
    p.text = jp["text"].get<std::string>();
    p.ids = jp["input_ids"].get<std::vector<int32_t>>();
    p.greedy = jp["greedy_ids"].get<std::vector<int32_t>>();
    const TensorView* t = (*logits_file)->Find("logits." + std::to_string(i));
    EXPECT_NE(t, nullptr);
    if (t == nullptr) continue;
    EXPECT_EQ(t->shape, (std::vector<int64_t>{static_cast<int64_t>(p.ids.size()), V}));
    p.logits.resize(t->numel());
    EXPECT_TRUE(ConvertToF32(t->dtype, t->data, t->numel(), p.logits.data()).ok());
    f.prompts.push_back(std::move(p));
  }
  return f;
}

double RelL2(const float* got, const float* want, int n) {
  double num = 0, den = 0;
  for (int i = 0; i < n; ++i) {
    num += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

// Teacher-forced logits of every prompt, all in one flat batch (or one batch each).
std::vector<std::vector<float>> ScorePrompts(Model& model, const std::vector<Prompt>& prompts,
                                             bool together) {
  std::vector<std::vector<float>> result(prompts.size());
  const int V = model.config().vocab_size;
  int blocks = 0;
  for (const Prompt& p : prompts) blocks += (p.ids.size() + kKvBlockSize - 1) / kKvBlockSize;
  auto kv = KvCache::Create(model.backend(), model.KvShape(blocks));
  EXPECT_TRUE(kv.ok());
  std::vector<std::vector<int32_t>> tables(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_TRUE(kv->pool->EnsureCapacity(&tables[i], prompts[i].ids.size()));
  }
  auto run = [&](const std::vector<size_t>& which) {
    Batch batch;
    batch.all_logits = true;
    for (size_t i : which) batch.AddSequence(prompts[i].ids, 0, tables[i].data(), true);
    ForwardOutput out;
    absl::Status s = model.Forward(batch, *kv->storage, &out);
    EXPECT_TRUE(s.ok()) << s;
    size_t row = 0;
    for (size_t i : which) {
      const size_t n = prompts[i].ids.size() * V;
      result[i].assign(out.logits.begin() + row, out.logits.begin() + row + n);
      row += n;
    }
  };
  if (together) {
    std::vector<size_t> all(prompts.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = i;
    run(all);
  } else {
    for (size_t i = 0; i < prompts.size(); ++i) run({i});
  }
  return result;
}

class ModelGoldenTest : public testing::TestWithParam<std::string> {
 protected:
  static void ExpectLogitsMatch(const Prompt& p, const std::vector<float>& got, int V,
                                const std::string& what) {
    ASSERT_EQ(got.size(), p.logits.size()) << what;
    for (size_t pos = 0; pos < p.ids.size(); ++pos) {
      const double err = RelL2(got.data() + pos * V, p.logits.data() + pos * V, V);
      EXPECT_LE(err, kMaxRelL2) << what << ": prompt '" << p.text << "' position " << pos;
    }
  }
};

TEST_P(ModelGoldenTest, TokenizerGivesTheReferenceInputIds) {
  Fixture f = LoadFixture(GetParam());
  ASSERT_FALSE(f.prompts.empty());
  for (const Prompt& p : f.prompts) {
    auto ids = f.lm.tokenizer->Encode(p.text, /*add_special_tokens=*/true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, p.ids) << p.text;
  }
}

TEST_P(ModelGoldenTest, TeacherForcedLogitsMatchTransformers) {
  Fixture f = LoadFixture(GetParam());
  ASSERT_FALSE(f.prompts.empty());
  const int V = f.lm.config.vocab_size;
  auto alone = ScorePrompts(*f.lm.model, f.prompts, /*together=*/false);
  auto together = ScorePrompts(*f.lm.model, f.prompts, /*together=*/true);
  for (size_t i = 0; i < f.prompts.size(); ++i) {
    ExpectLogitsMatch(f.prompts[i], alone[i], V, "alone");
    ExpectLogitsMatch(f.prompts[i], together[i], V, "flat batch");
    // Batched and alone runs are bit-identical: every kernel reduces in an order fixed by
    // the shapes of the model, not by the batch (DESIGN.md section 1a).
    ASSERT_EQ(together[i].size(), alone[i].size());
    EXPECT_EQ(std::memcmp(together[i].data(), alone[i].data(), alone[i].size() * sizeof(float)), 0)
        << "prompt '" << f.prompts[i].text << "' alone and in a flat batch differ";
  }
}

TEST_P(ModelGoldenTest, ChunkedPrefillThroughTheKvCacheMatches) {
  Fixture f = LoadFixture(GetParam());
  ASSERT_FALSE(f.prompts.empty());
  Model& model = *f.lm.model;
  const int V = f.lm.config.vocab_size;
  for (const Prompt& p : f.prompts) {
    const int n = static_cast<int>(p.ids.size());
    if (n < 3) continue;
    auto kv = KvCache::Create(model.backend(), model.KvShape(n / kKvBlockSize + 1));
    ASSERT_TRUE(kv.ok());
    std::vector<int32_t> table;
    ASSERT_TRUE(kv->pool->EnsureCapacity(&table, n));
    // Three chunks: [0, a), [a, b), [b, n), each a separate step.
    const int a = n / 3, b = 2 * n / 3;
    std::vector<float> got;
    for (auto [lo, hi] : {std::pair{0, a}, std::pair{a, b}, std::pair{b, n}}) {
      if (lo == hi) continue;
      Batch batch;
      batch.all_logits = true;
      batch.AddSequence(std::span(p.ids).subspan(lo, hi - lo), lo, table.data(), true);
      ForwardOutput out;
      ASSERT_TRUE(model.Forward(batch, *kv->storage, &out).ok());
      got.insert(got.end(), out.logits.begin(), out.logits.end());
    }
    ExpectLogitsMatch(p, got, V, "chunked prefill");
  }
}

// A copy of the fixture whose every tensor is rounded to bf16: one set of bf16-valued
// weights that both dtypes can hold exactly.
fs::path Bf16Copy(const std::string& name) {
  const FixtureDirs dirs = DirsOf(name);
  const fs::path dst =
      fs::path(testing::TempDir()) /
      ("bf16_" + name + "_" + testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove_all(dst);
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(dirs.model)) {
    const std::string fn = e.path().filename().string();
    if (fn.ends_with(".safetensors") || fn == "model.safetensors.index.json") continue;
    fs::copy(e.path(), dst / fn);
  }
  auto ckpt = Checkpoint::Open(dirs.model.string());
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  std::vector<TensorToWrite> tensors;
  for (const std::string& tname : (*ckpt)->TensorNames()) {
    const TensorView* view = *(*ckpt)->Get(tname);
    TensorToWrite t;
    t.name = tname;
    t.dtype = DType::kBF16;
    t.shape = view->shape;
    t.fill = [view](std::byte* dst, size_t offset, size_t n) {
      std::vector<float> f(n / 2);
      const std::byte* src = view->data + offset / 2 * DTypeSize(view->dtype);
      EXPECT_TRUE(ConvertToF32(view->dtype, src, static_cast<int64_t>(f.size()), f.data()).ok());
      for (size_t i = 0; i < f.size(); ++i) {
        const uint16_t b = kernels::cpu::FloatToBf16(f[i]);
        std::memcpy(dst + 2 * i, &b, 2);
      }
    };
    tensors.push_back(std::move(t));
  }
  EXPECT_TRUE(WriteSafetensors((dst / "model.safetensors").string(), tensors).ok());
  return dst;
}

double MaxRelL2(const std::vector<float>& got, const std::vector<float>& want, int V) {
  double worst = 0;
  for (size_t pos = 0; pos * V < want.size(); ++pos) {
    worst = std::max(worst, RelL2(got.data() + pos * V, want.data() + pos * V, V));
  }
  return worst;
}

// On the same bf16-valued weights, the bf16 path (bf16 weights, fp32 activations and
// accumulation) gives the fp32 path's logits and greedy continuations. Required: relative
// L2 <= 1e-4 per position and identical greedy tokens; the kernels give bit-identical
// logits, which is checked too.
TEST_P(ModelGoldenTest, Bf16PathMatchesTheFp32PathOnTheSameWeights) {
  Fixture f = LoadFixture(GetParam());
  ASSERT_FALSE(f.prompts.empty());
  const fs::path dir = Bf16Copy(GetParam());
  LoadOptions as_f32, as_bf16;
  as_f32.dtype = WeightDtype::kFloat32;
  as_bf16.dtype = WeightDtype::kBfloat16;
  auto f32 = LoadModelDir(dir.string(), as_f32);
  auto bf16 = LoadModelDir(dir.string(), as_bf16);
  auto automatic = LoadModelDir(dir.string());
  ASSERT_TRUE(f32.ok() && bf16.ok() && automatic.ok()) << bf16.status();
  EXPECT_EQ(f32->model->weights().stats().dtype, kernels::DType::kF32);
  EXPECT_EQ(bf16->model->weights().stats().dtype, kernels::DType::kBF16);
  EXPECT_EQ(automatic->model->weights().stats().dtype, kernels::DType::kBF16)
      << "auto keeps the checkpoint's bf16";
  EXPECT_LT(bf16->model->weights().stats().resident_bytes,
            f32->model->weights().stats().resident_bytes * 0.6);
  const int V = f.lm.config.vocab_size;
  const auto a = ScorePrompts(*f32->model, f.prompts, /*together=*/true);
  const auto b = ScorePrompts(*bf16->model, f.prompts, /*together=*/true);
  for (size_t i = 0; i < f.prompts.size(); ++i) {
    EXPECT_LE(MaxRelL2(b[i], a[i], V), 1e-4) << f.prompts[i].text;
    EXPECT_EQ(std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)), 0)
        << f.prompts[i].text;
  }
  for (const Prompt& p : f.prompts) {
    GenerateRequest r;
    r.prompt = p.ids;
    r.max_tokens = static_cast<int>(p.greedy.size());
    r.sampling.temperature = 0.f;
    r.ignore_eos = true;
    auto ga = RunToCompletion(*f32, std::span(&r, 1));
    auto gb = RunToCompletion(*bf16, std::span(&r, 1));
    ASSERT_TRUE(ga.ok() && gb.ok());
    EXPECT_EQ((*gb)[0].tokens, (*ga)[0].tokens) << p.text;
  }
}

// Teacher-forced logits of `target` in one step, after `companions` of random tokens have
// each prefilled `history` tokens: the step holds every companion's next token (a decode)
// and the whole target prompt at `slot` among them.
std::vector<float> ScoreAmongCompanions(Model& model, const std::vector<int32_t>& target,
                                        int companions, int history, int slot, uint32_t seed) {
  const ModelConfig& cfg = model.config();
  const int V = cfg.vocab_size;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> tok(0, V - 1);
  const int per_seq = (std::max<int>(target.size(), history + 1) + kKvBlockSize - 1) / kKvBlockSize;
  auto kv = KvCache::Create(model.backend(), model.KvShape((companions + 1) * per_seq));
  EXPECT_TRUE(kv.ok());
  std::vector<std::vector<int32_t>> tokens(companions), tables(companions + 1);
  for (int c = 0; c < companions; ++c) {
    for (int i = 0; i <= history; ++i) tokens[c].push_back(tok(rng));
    EXPECT_TRUE(kv->pool->EnsureCapacity(&tables[c], history + 1));
  }
  EXPECT_TRUE(kv->pool->EnsureCapacity(&tables[companions], target.size()));
  ForwardOutput out;
  if (history > 0) {
    Batch prefill;
    for (int c = 0; c < companions; ++c) {
      prefill.AddSequence(std::span(tokens[c]).first(history), 0, tables[c].data(), true);
    }
    EXPECT_TRUE(model.Forward(prefill, *kv->storage, &out).ok());
  }
  Batch step;
  step.all_logits = true;
  int target_index = -1;
  for (int c = 0; c <= companions; ++c) {
    if (c == slot) {
      target_index = static_cast<int>(step.seqs.size());
      step.AddSequence(target, 0, tables[companions].data(), true);
    }
    if (c < companions) {
      step.AddSequence(std::span(tokens[c]).subspan(history, 1), history, tables[c].data(), true);
    }
  }
  EXPECT_TRUE(model.Forward(step, *kv->storage, &out).ok());
  std::vector<float> got;
  for (size_t r = 0; r < out.rows_seq.size(); ++r) {
    if (out.rows_seq[r] != target_index) continue;
    got.insert(got.end(), out.logits.begin() + r * V, out.logits.begin() + (r + 1) * V);
  }
  return got;
}

// A sequence's logits are bit-identical alone, in a batch of 31 others (decodes with KV
// history), at the batch's start, middle or end, and when its prompt is prefilled in
// chunks, with fp32 and with bf16 weights.
TEST_P(ModelGoldenTest, LogitsAreBitIdenticalInAnyBatch) {
  for (WeightDtype dtype : {WeightDtype::kFloat32, WeightDtype::kBfloat16}) {
    LoadOptions options;
    options.dtype = dtype;
    auto lm = LoadModelDir(DirsOf(GetParam()).model.string(), options);
    ASSERT_TRUE(lm.ok()) << lm.status();
    Model& model = *lm->model;
    std::vector<int32_t> target;
    for (int i = 0; i < 21; ++i) target.push_back((i * 37 + 11) % lm->config.vocab_size);
    const std::vector<float> alone = ScoreAmongCompanions(model, target, 0, 0, 0, 1);
    ASSERT_EQ(alone.size(), target.size() * lm->config.vocab_size);
    auto same = [&](const std::vector<float>& got, const std::string& what) {
      ASSERT_EQ(got.size(), alone.size()) << what;
      EXPECT_EQ(std::memcmp(got.data(), alone.data(), alone.size() * sizeof(float)), 0)
          << WeightDtypeName(dtype) << ": " << what;
    };
    for (int slot : {0, 15, 31}) {
      same(ScoreAmongCompanions(model, target, 31, 5, slot, 100 + slot),
           "among 31 at slot " + std::to_string(slot));
    }
    same(ScoreAmongCompanions(model, target, 7, 0, 3, 7), "among 7 prefills");
    // Chunked prefill: 1, 3 and 7 tokens a step through the KV cache.
    for (int chunk : {1, 3, 7}) {
      auto kv = KvCache::Create(model.backend(), model.KvShape(2));
      ASSERT_TRUE(kv.ok());
      std::vector<int32_t> table;
      ASSERT_TRUE(kv->pool->EnsureCapacity(&table, target.size()));
      std::vector<float> got;
      for (size_t lo = 0; lo < target.size(); lo += chunk) {
        const size_t n = std::min<size_t>(chunk, target.size() - lo);
        Batch b;
        b.all_logits = true;
        b.AddSequence(std::span(target).subspan(lo, n), static_cast<int32_t>(lo), table.data(),
                      true);
        ForwardOutput out;
        ASSERT_TRUE(model.Forward(b, *kv->storage, &out).ok());
        got.insert(got.end(), out.logits.begin(), out.logits.end());
      }
      same(got, "prefilled in chunks of " + std::to_string(chunk));
    }
  }
}

TEST_P(ModelGoldenTest, GreedyContinuationsMatchAloneAndBatched) {
  Fixture f = LoadFixture(GetParam());
  ASSERT_FALSE(f.prompts.empty());
  std::vector<GenerateRequest> reqs;
  for (const Prompt& p : f.prompts) {
    GenerateRequest r;
    r.prompt = p.ids;
    r.max_tokens = static_cast<int>(p.greedy.size());
    r.sampling.temperature = 0.f;
    r.ignore_eos = true;
    reqs.push_back(r);
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    auto alone = RunToCompletion(f.lm, std::span(&reqs[i], 1));
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_EQ((*alone)[0].tokens, f.prompts[i].greedy) << "alone: " << f.prompts[i].text;
  }
  auto batched = RunToCompletion(f.lm, reqs);
  ASSERT_TRUE(batched.ok()) << batched.status();
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ((*batched)[i].tokens, f.prompts[i].greedy) << "batched: " << f.prompts[i].text;
  }
}

// The tiny random checkpoints (tools/make_golden_models.py; mixtral_swa has a sliding
// window of 6 tokens) and the trained default
// model (tools/make_default_model_reference.py).
INSTANTIATE_TEST_SUITE_P(Architectures, ModelGoldenTest,
                         testing::Values("mixtral", "mixtral_swa", "qwen2_moe", "qwen3_moe",
                                         "olmoe", "default"),
                         [](const testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// The whole model on each device (issue 12), the golden tests parameterized by device:
// with fp32 weights, teacher-forced logits within 1e-4 relative L2 of transformers (a GPU's
// fp32 GEMMs need not sum in the CPU's order) and the reference's greedy continuations;
// with the same weights rounded to bf16 (Bf16Copy), logits within 1e-2 of the CPU's fp32
// run of those weights (the CUDA bf16 GEMMs round their input rows to bf16) and the same
// greedy continuations. The continuations run through the scheduler (RunToCompletion), so
// the KV cache, the step arrays and sampling are the device's too. The cuda cases skip
// where no device (or no CUDA build) is.
class ModelDeviceGoldenTest : public testing::TestWithParam<std::tuple<std::string, std::string>> {
 protected:
  // The model on `device`, or nullopt (the test skipped) where the device is missing.
  static std::optional<LoadedModel> LoadOn(const fs::path& dir, const std::string& device,
                                           WeightDtype dtype) {
    LoadOptions options;
    options.device = device;
    options.dtype = dtype;
    absl::StatusOr<LoadedModel> lm = LoadModelDir(dir.string(), options);
    if (!lm.ok() && absl::IsFailedPrecondition(lm.status())) return std::nullopt;
    EXPECT_TRUE(lm.ok()) << lm.status();
    if (!lm.ok()) return std::nullopt;
    EXPECT_STREQ(lm->model->backend().name(), device.c_str());
    return *std::move(lm);
  }
  static std::vector<std::vector<int32_t>> Greedy(const LoadedModel& lm,
                                                  const std::vector<Prompt>& prompts) {
    std::vector<GenerateRequest> requests(prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      requests[i].prompt = prompts[i].ids;
      requests[i].max_tokens = static_cast<int>(prompts[i].greedy.size());
      requests[i].sampling.temperature = 0.f;
      requests[i].ignore_eos = true;
    }
    auto done = RunToCompletion(lm, requests);
    EXPECT_TRUE(done.ok()) << done.status();
    std::vector<std::vector<int32_t>> tokens;
    if (done.ok()) {
      for (const Completion& c : *done) tokens.push_back(c.tokens);
    }
    return tokens;
  }
};

TEST_P(ModelDeviceGoldenTest, Fp32LogitsAndGreedyMatchTransformers) {
  const auto& [name, device] = GetParam();
  Fixture f = LoadFixture(name);
  ASSERT_FALSE(f.prompts.empty());
  std::optional<LoadedModel> lm = LoadOn(DirsOf(name).model, device, WeightDtype::kFloat32);
  if (!lm.has_value()) {
    if (HasFailure()) return;
    GTEST_SKIP() << "no " << device << " device here";
  }
  const int V = f.lm.config.vocab_size;
  const auto got = ScorePrompts(*lm->model, f.prompts, /*together=*/true);
  for (size_t i = 0; i < f.prompts.size(); ++i) {
    EXPECT_LE(MaxRelL2(got[i], f.prompts[i].logits, V), 1e-4) << f.prompts[i].text;
  }
  const auto greedy = Greedy(*lm, f.prompts);
  ASSERT_EQ(greedy.size(), f.prompts.size());
  for (size_t i = 0; i < f.prompts.size(); ++i) {
    EXPECT_EQ(greedy[i], f.prompts[i].greedy) << f.prompts[i].text;
  }
}

TEST_P(ModelDeviceGoldenTest, Bf16LogitsAndGreedyMatchTheFp32RunOfTheSameWeights) {
  const auto& [name, device] = GetParam();
  Fixture f = LoadFixture(name);
  ASSERT_FALSE(f.prompts.empty());
  const fs::path dir = Bf16Copy(name);
  std::optional<LoadedModel> bf16 = LoadOn(dir, device, WeightDtype::kBfloat16);
  if (!bf16.has_value()) {
    if (HasFailure()) return;
    GTEST_SKIP() << "no " << device << " device here";
  }
  std::optional<LoadedModel> oracle = LoadOn(dir, "cpu", WeightDtype::kFloat32);
  ASSERT_TRUE(oracle.has_value());
  EXPECT_EQ(bf16->model->weights().stats().dtype, kernels::DType::kBF16);
  const int V = f.lm.config.vocab_size;
  const auto want = ScorePrompts(*oracle->model, f.prompts, /*together=*/true);
  const auto got = ScorePrompts(*bf16->model, f.prompts, /*together=*/true);
  for (size_t i = 0; i < f.prompts.size(); ++i) {
    EXPECT_LE(MaxRelL2(got[i], want[i], V), 1e-2) << f.prompts[i].text;
  }
  EXPECT_EQ(Greedy(*bf16, f.prompts), Greedy(*oracle, f.prompts));
}

// Decode steps replayed from recorded graphs give the tokens the eager steps give, and
// the graphs are used (a device with graphs only; the CPU has none).
TEST_P(ModelDeviceGoldenTest, DecodeGraphsGiveTheEagerTokens) {
  const auto& [name, device] = GetParam();
  Fixture f = LoadFixture(name);
  ASSERT_FALSE(f.prompts.empty());
  const fs::path dir = Bf16Copy(name);
  setenv("MOE_CUDA_GRAPHS", "0", 1);
  std::optional<LoadedModel> eager = LoadOn(dir, device, WeightDtype::kBfloat16);
  unsetenv("MOE_CUDA_GRAPHS");
  if (!eager.has_value()) {
    if (HasFailure()) return;
    GTEST_SKIP() << "no " << device << " device here";
  }
  std::optional<LoadedModel> graphs = LoadOn(dir, device, WeightDtype::kBfloat16);
  ASSERT_TRUE(graphs.has_value());
  const auto want = Greedy(*eager, f.prompts);
  const auto got = Greedy(*graphs, f.prompts);
  EXPECT_EQ(got, want);
  EXPECT_EQ(eager->model->graph_replays(), 0);
  if (device == "cpu") {
    EXPECT_EQ(graphs->model->graph_replays(), 0) << "the CPU backend records no graphs";
  } else {
    EXPECT_GT(graphs->model->graph_replays(), 0);
    EXPECT_EQ(graphs->model->graph_failures(), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Devices, ModelDeviceGoldenTest,
    testing::Combine(testing::Values("mixtral", "mixtral_swa", "qwen2_moe", "qwen3_moe", "olmoe",
                                     "default"),
                     testing::Values("cpu", "cuda")),
    [](const testing::TestParamInfo<std::tuple<std::string, std::string>>& info) {
      return std::get<0>(info.param) + "_" + std::get<1>(info.param);
    });

// A copy of a fixture whose config.json is edited, to show that weights that do not match
// the config are refused with the tensor named.
class BadCheckpointTest : public testing::Test {
 protected:
  fs::path CopyWithConfig(const std::string& name,
                          const std::function<void(nlohmann::json&)>& edit) {
    const fs::path src = ModelsDir() / name;
    // One directory per test: ctest runs the tests of this file in parallel processes.
    const fs::path dst =
        fs::path(testing::TempDir()) /
        ("bad_" + name + "_" + testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dst);
    fs::copy(src, dst, fs::copy_options::recursive);
    nlohmann::json cfg = ReadJson(dst / "config.json");
    edit(cfg);
    std::ofstream(dst / "config.json") << cfg.dump(2);
    return dst;
  }
};

TEST_F(BadCheckpointTest, MissingTensorIsNamed) {
  // One layer more than the checkpoint holds.
  const fs::path dir = CopyWithConfig("mixtral", [](nlohmann::json& c) {
    c["num_hidden_layers"] = c["num_hidden_layers"].get<int>() + 1;
  });
  auto lm = LoadModelDir(dir.string());
  ASSERT_FALSE(lm.ok());
  EXPECT_EQ(lm.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(lm.status().message()),
              HasSubstr("model.layers.2.input_layernorm.weight"));
}

TEST_F(BadCheckpointTest, WrongShapeIsNamed) {
  const fs::path dir = CopyWithConfig("olmoe", [](nlohmann::json& c) {
    c["intermediate_size"] = c["intermediate_size"].get<int>() + 1;
  });
  auto lm = LoadModelDir(dir.string());
  ASSERT_FALSE(lm.ok());
  EXPECT_EQ(lm.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(lm.status().message()), HasSubstr("experts.0.gate_proj.weight"));
  EXPECT_THAT(std::string(lm.status().message()), HasSubstr("model.safetensors"));
}

TEST_F(BadCheckpointTest, MissingShardIsNamed) {
  const fs::path dir = CopyWithConfig("qwen3_moe", [](nlohmann::json&) {});
  std::string shard;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string fn = e.path().filename().string();
    if (fn.starts_with("model-") && fn.ends_with(".safetensors")) shard = fn;
  }
  ASSERT_FALSE(shard.empty()) << "the qwen3_moe fixture is expected to be sharded";
  fs::remove(dir / shard);
  auto lm = LoadModelDir(dir.string());
  ASSERT_FALSE(lm.ok());
  EXPECT_THAT(std::string(lm.status().message()), HasSubstr(shard));
}

TEST_F(BadCheckpointTest, TruncatedWeightsAreRefused) {
  const fs::path dir = CopyWithConfig("olmoe", [](nlohmann::json&) {});
  const fs::path weights = dir / "model.safetensors";
  fs::resize_file(weights, fs::file_size(weights) / 2);
  auto lm = LoadModelDir(dir.string());
  ASSERT_FALSE(lm.ok());
  EXPECT_THAT(std::string(lm.status().message()), HasSubstr("model.safetensors"));
}

TEST_F(BadCheckpointTest, GenerationStopsAtTheEosOfGenerationConfig) {
  // Make the third greedy token of prompt 0 an EOS id through generation_config.json.
  Fixture f = LoadFixture("olmoe");
  ASSERT_FALSE(f.prompts.empty());
  const int32_t eos = f.prompts[0].greedy[2];
  const fs::path dir = CopyWithConfig("olmoe", [](nlohmann::json&) {});
  std::ofstream(dir / "generation_config.json") << nlohmann::json{{"eos_token_id", {eos}}}.dump();
  auto lm = LoadModelDir(dir.string());
  ASSERT_TRUE(lm.ok()) << lm.status();
  GenerateRequest r;
  r.prompt = f.prompts[0].ids;
  r.max_tokens = 10;
  r.sampling.temperature = 0.f;
  auto out = RunToCompletion(*lm, std::span(&r, 1));
  ASSERT_TRUE(out.ok()) << out.status();
  const auto& first = f.prompts[0].greedy;
  // It stops at the first occurrence of the id, which may come before position 2.
  const size_t stop = std::find(first.begin(), first.end(), eos) - first.begin();
  EXPECT_EQ((*out)[0].reason, StopReason::kStop);
  EXPECT_EQ((*out)[0].tokens, std::vector<int32_t>(first.begin(), first.begin() + stop + 1));
  r.ignore_eos = true;
  out = RunToCompletion(*lm, std::span(&r, 1));
  ASSERT_TRUE(out.ok());
  EXPECT_EQ((*out)[0].reason, StopReason::kLength);
  EXPECT_EQ((*out)[0].tokens.size(), 10u);
}

// Three prompts prefilled in one step on a fixture, each step's batch marked by `mark`
// (batch, prompt index) after its sequence is added.
class ThreePromptStep {
 public:
  explicit ThreePromptStep(const std::string& fixture) {
    auto lm = LoadModelDir((ModelsDir() / fixture).string());
    EXPECT_TRUE(lm.ok()) << lm.status();
    lm_ = *std::move(lm);
    auto kv = KvCache::Create(model().backend(), model().KvShape(8));
    EXPECT_TRUE(kv.ok());
    kv_ = *std::move(kv);
    for (size_t i = 0; i < prompts_.size(); ++i) {
      EXPECT_TRUE(kv_.pool->EnsureCapacity(&tables_[i], prompts_[i].size()));
    }
  }
  Model& model() { return *lm_.model; }
  int vocab() { return model().config().vocab_size; }
  ForwardOutput Step(const std::function<void(BatchSequence&, size_t)>& mark) {
    Batch batch;
    for (size_t i = 0; i < prompts_.size(); ++i) {
      batch.AddSequence(prompts_[i], 0, tables_[i].data(), /*sample=*/true);
      mark(batch.seqs.back(), i);
    }
    ForwardOutput out;
    EXPECT_TRUE(model().Forward(batch, *kv_.storage, &out).ok());
    return out;
  }

 private:
  LoadedModel lm_;
  KvCache kv_;
  std::vector<std::vector<int32_t>> prompts_ = {{3, 4, 5}, {7, 8}, {9, 10, 11, 12}};
  std::vector<std::vector<int32_t>> tables_ = std::vector<std::vector<int32_t>>(3);
};

// A step whose sampled sequences are all greedy returns each row's argmax (the sampler's
// greedy pick: lowest id among equal maxima) and no logits; one non-greedy sequence brings
// the logits back for every row.
TEST(ModelForwardTest, AllGreedyStepReturnsTheArgmaxInsteadOfLogits) {
  ThreePromptStep f("mixtral");
  const int V = f.vocab();
  auto step = [&](bool greedy_last) {
    return f.Step([&](BatchSequence& seq, size_t i) {
      seq.sample = i != 1;
      seq.greedy = i != 2 || greedy_last;
    });
  };
  const ForwardOutput mixed = step(false);
  const ForwardOutput greedy = step(true);
  ASSERT_EQ(mixed.rows_seq, (std::vector<int32_t>{0, 2}));
  EXPECT_TRUE(mixed.tokens.empty());
  ASSERT_EQ(mixed.logits.size(), 2u * V);
  EXPECT_TRUE(greedy.logits.empty());
  EXPECT_EQ(greedy.rows_seq, mixed.rows_seq);
  ASSERT_EQ(greedy.tokens.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    const float* row = mixed.logits.data() + static_cast<size_t>(r) * V;
    const int32_t want = static_cast<int32_t>(std::max_element(row, row + V) - row);
    EXPECT_EQ(greedy.tokens[r], want) << "row " << r;
  }
}

// Tokens drawn on the backend (kernels::SampleParams): the step's ids are the reference
// draw on its own logits with each sequence's parameters and uniform, greedy rows mixed in.
TEST(ModelForwardTest, BackendSampledStepGivesTheReferenceDraw) {
  ThreePromptStep f("olmoe");
  const int V = f.vocab();
  const BatchSequence::BackendSample draws[] = {
      {true, 0.8f, 5, 1.f, 0.31f}, {false, 1.f, 0, 1.f, 0.f}, {true, 1.2f, 0, 0.9f, 0.77f}};
  const ForwardOutput logits = f.Step([](BatchSequence&, size_t) {});
  const ForwardOutput drawn = f.Step([&](BatchSequence& seq, size_t i) {
    seq.greedy = !draws[i].on;
    seq.backend_sample = draws[i];
  });
  ASSERT_EQ(logits.logits.size(), 3u * V);
  EXPECT_TRUE(drawn.logits.empty());
  ASSERT_EQ(drawn.tokens.size(), 3u);
  for (int r = 0; r < 3; ++r) {
    const BatchSequence::BackendSample& d = draws[r];
    const float temperature = d.on ? d.temperature : 0.f;
    int32_t want = -1;
    const kernels::SampleParams sp{logits.logits.data() + static_cast<size_t>(r) * V,
                                   1,
                                   V,
                                   &temperature,
                                   &d.top_k,
                                   &d.top_p,
                                   &d.uniform,
                                   &want};
    kernels::cpu::Sample(sp);
    EXPECT_EQ(drawn.tokens[r], want) << "row " << r;
  }
}

// An SCMoE pair combined on the backend (BatchSequence::backend_contrast): the strong
// sequence's token is the reference draw from the host-side scores of its row and the
// next sequence's row, with EOS banned.
TEST(ModelForwardTest, BackendContrastedPairGivesTheReferenceDraw) {
  ThreePromptStep f("qwen2_moe");
  const int V = f.vocab();
  const std::vector<int32_t>& eos = f.model().config().eos_token_ids;
  const BatchSequence::BackendSample draw{true, 1.f, 0, 0.95f, 0.42f};
  const BatchSequence::BackendContrast contrast{true, 0.8f, 0.1f, 0.5f, true};
  const ForwardOutput logits = f.Step([](BatchSequence&, size_t) {});
  const ForwardOutput drawn = f.Step([&](BatchSequence& seq, size_t i) {
    seq.greedy = i != 0;  // the weak row (1) and the third sequence are greedy
    if (i == 0) {
      seq.backend_sample = draw;
      seq.backend_contrast = contrast;
    }
  });
  ASSERT_EQ(drawn.tokens.size(), 3u);
  SelfContrastParams params;
  params.alpha = contrast.alpha;
  params.beta = contrast.beta;
  params.ban_eos = contrast.ban_eos;
  std::vector<float> scores;
  SelfContrastScores(std::span(logits.logits).first(V), std::span(logits.logits).subspan(V, V),
                     contrast.temperature, params, eos, &scores);
  int32_t want = -1;
  const kernels::SampleParams sp{
      scores.data(), 1, V, &draw.temperature, &draw.top_k, &draw.top_p, &draw.uniform, &want};
  kernels::cpu::Sample(sp);
  EXPECT_EQ(drawn.tokens[0], want);
  EXPECT_EQ(std::find(eos.begin(), eos.end(), drawn.tokens[0]), eos.end()) << "EOS is banned";
  const float* third = logits.logits.data() + 2 * static_cast<size_t>(V);
  EXPECT_EQ(drawn.tokens[2], static_cast<int32_t>(std::max_element(third, third + V) - third));
}

TEST(ModelForwardTest, SeededSamplingIsReproducibleAndBatchIndependent) {
  auto lm = LoadModelDir((ModelsDir() / "qwen3_moe").string());
  ASSERT_TRUE(lm.ok()) << lm.status();
  GenerateRequest r;
  r.prompt = {5, 6, 7, 8};
  r.max_tokens = 12;
  r.ignore_eos = true;
  r.sampling.temperature = 1.5f;
  r.sampling.top_p = 0.9f;
  r.sampling.top_k = 50;
  r.sampling.seed = 1234;
  GenerateRequest other = r;
  other.prompt = {9, 10, 11, 12, 13, 14};
  other.sampling.seed = 99;
  auto a = RunToCompletion(*lm, std::span(&r, 1));
  auto b = RunToCompletion(*lm, std::vector<GenerateRequest>{other, r});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)[0].tokens, (*b)[1].tokens);
  r.sampling.seed = 1235;
  auto c = RunToCompletion(*lm, std::span(&r, 1));
  ASSERT_TRUE(c.ok());
  EXPECT_NE((*a)[0].tokens, (*c)[0].tokens);
}

TEST(ModelForwardTest, MalformedBatchIsAnErrorNotACrash) {
  auto lm = LoadModelDir((ModelsDir() / "olmoe").string());
  ASSERT_TRUE(lm.ok()) << lm.status();
  Model& model = *lm->model;
  auto kv = KvCache::Create(model.backend(), model.KvShape(2));
  ASSERT_TRUE(kv.ok());
  std::vector<int32_t> table;
  ASSERT_TRUE(kv->pool->EnsureCapacity(&table, 4));
  ForwardOutput out;
  {
    Batch b;
    const int32_t bad[] = {1, lm->config.vocab_size};
    b.AddSequence(bad, 0, table.data(), true);
    EXPECT_EQ(model.Forward(b, *kv->storage, &out).code(), absl::StatusCode::kInvalidArgument);
  }
  {
    Batch b;
    const int32_t ok[] = {1, 2};
    b.AddSequence(ok, lm->config.max_position_embeddings - 1, table.data(), true);
    EXPECT_EQ(model.Forward(b, *kv->storage, &out).code(), absl::StatusCode::kInvalidArgument);
  }
  {
    Batch b;
    const int32_t ok[] = {1, 2};
    b.AddSequence(ok, 0, nullptr, true);
    EXPECT_EQ(model.Forward(b, *kv->storage, &out).code(), absl::StatusCode::kInvalidArgument);
  }
  GenerateRequest r;
  r.prompt = {1, 2, 3};
  r.max_tokens = lm->config.max_position_embeddings;
  EXPECT_EQ(RunToCompletion(*lm, std::span(&r, 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  r.max_tokens = 2;
  r.prompt.clear();
  EXPECT_EQ(RunToCompletion(*lm, std::span(&r, 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe

// The OpenAI request parser (server/openai_protocol.h) on arbitrary bodies, as
// /v1/completions, /v1/chat/completions, /tokenize and /detokenize receive them: an
// ApiError or a request within the limits, never a crash or an exception.
#include <memory>

#include "engine/loader.h"
#include "fuzz/fuzz_util.h"
#include "server/chat_template.h"
#include "server/openai_protocol.h"
#include "tokenizer/tokenizer.h"

namespace {
struct Model {
  std::unique_ptr<moe::Tokenizer> tokenizer;
  moe::server::ChatTemplate chat_template;
  moe::server::ModelLimits limits;
};

const Model& DefaultModel() {
  static const Model* model = [] {
    const std::string dir = moe::fuzz::DefaultModelDir();
    auto t = moe::Tokenizer::FromFiles(dir + "/tokenizer.json", dir + "/tokenizer_config.json");
    if (!t.ok()) __builtin_trap();
    auto* m = new Model{*std::move(t), moe::server::ChatTemplate::FromModelDir(dir), {}};
    m->limits.served_names = {"default-model"};
    m->limits.context = 1024;
    m->limits.vocab_size = 4096;
    m->limits.max_tokens_limit = 1024;
    m->limits.num_routed_experts = 8;
    return m;
  }();
  return *model;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Model& model = DefaultModel();
  nlohmann::json body;
  if (moe::server::ParseJsonObject(std::string_view(reinterpret_cast<const char*>(data), size),
                                   &body)) {
    return 0;
  }
  try {
    for (const bool chat : {false, true}) {
      moe::server::ParsedGeneration out;
      const auto error =
          chat ? moe::server::ParseChatRequest(body, model.limits, *model.tokenizer,
                                               model.chat_template, &out)
               : moe::server::ParseCompletionRequest(body, model.limits, *model.tokenizer, &out);
      if (!error) {
        const int prompt = static_cast<int>(out.request.prompt.size());
        if (prompt < 1 || prompt + out.request.max_tokens > model.limits.context) __builtin_trap();
        for (int32_t id : out.request.prompt) {
          if (id < 0 || id >= model.limits.vocab_size) __builtin_trap();
        }
        // The extensions it accepted are ones the engine accepts too.
        if (!moe::ValidateRouting(out.request.routing, 8).ok()) __builtin_trap();
        if (out.request.self_contrast && !out.request.self_contrast->Validate(8).ok()) {
          __builtin_trap();
        }
      } else if (error->status < 400 || error->status > 599) {
        __builtin_trap();
      }
    }
    std::string text;
    bool special = false;
    (void)moe::server::ParseTokenizeRequest(body, model.limits, &text, &special);
    std::vector<int32_t> ids;
    if (!moe::server::ParseDetokenizeRequest(body, model.limits, &ids, &special)) {
      (void)model.tokenizer->Decode(ids, special);
    }
  } catch (const nlohmann::json::exception&) {
    // The HTTP service turns these into 400s (guarded handlers); the parser should not
    // throw, but a throw is not a crash.
  }
  return 0;
}

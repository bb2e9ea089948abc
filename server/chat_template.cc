#include "server/chat_template.h"

#include <fstream>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "base/absl_compat.h"

namespace moe::server {
namespace {

constexpr std::string_view kSupported =
    "the built-in templates are the ChatML (<|im_start|>) and Mistral ([INST]) families; "
    "use /v1/completions with a rendered prompt instead";

// tokenizer_config.json spells special tokens as a string or {"content": "..."}.
std::string TokenString(const nlohmann::json& config, const char* key, std::string fallback) {
  auto it = config.find(key);
  if (it == config.end()) return fallback;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  return fallback;
}

// The system turn a ChatML template inserts when the conversation has none, as in
// Qwen2's `{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}`: the
// literal text between "<|im_start|>system" + newline and "<|im_end|>", if it is a plain
// literal (no Jinja expression in between).
std::string ChatMlDefaultSystem(std::string_view tmpl) {
  constexpr std::string_view kOpen = "<|im_start|>system";
  size_t pos = tmpl.find(kOpen);
  if (pos == std::string_view::npos) return "";
  pos += kOpen.size();
  if (tmpl.substr(pos, 2) == "\\n") {
    pos += 2;
  } else if (tmpl.substr(pos, 1) == "\n") {
    pos += 1;
  } else {
    return "";
  }
  size_t end = tmpl.find("<|im_end|>", pos);
  if (end == std::string_view::npos) return "";
  std::string_view text = tmpl.substr(pos, end - pos);
  if (text.empty() || text.find_first_of("'\"{}+") != std::string_view::npos) return "";
  return std::string(text);
}

}  // namespace

ChatTemplate ChatTemplate::FromTemplate(std::string_view template_text, std::string bos_token,
                                        std::string eos_token) {
  ChatTemplate t;
  t.bos_token_ = std::move(bos_token);
  t.eos_token_ = std::move(eos_token);
  if (template_text.empty()) {
    t.unsupported_reason_ = absl::StrCat(
        "this model has no chat template in tokenizer_config.json, so chat is not "
        "supported; ",
        ToAbsl(kSupported));
  } else if (template_text.find("<|im_start|>") != std::string_view::npos) {
    t.family_ = Family::kChatMl;
    t.default_system_ = ChatMlDefaultSystem(template_text);
    t.turn_end_tokens_ = {"<|im_end|>"};
  } else if (template_text.find("[INST]") != std::string_view::npos) {
    t.family_ = Family::kMistral;
    t.mistral_spaced_ = template_text.find("[INST] ") != std::string_view::npos;
    if (!t.eos_token_.empty()) t.turn_end_tokens_ = {t.eos_token_};
  } else {
    t.unsupported_reason_ =
        absl::StrCat("the chat template of this model is not supported: ", ToAbsl(kSupported));
  }
  return t;
}

ChatTemplate ChatTemplate::FromModelDir(const std::string& dir) {
  const std::string path = dir + "/tokenizer_config.json";
  std::ifstream in(path);
  if (!in) return FromTemplate("", "", "");
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json config = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (!config.is_object()) return FromTemplate("", "", "");
  std::string tmpl;
  auto it = config.find("chat_template");
  if (it != config.end() && it->is_string()) {
    tmpl = it->get<std::string>();
  } else if (it != config.end() && it->is_array()) {
    // Newer checkpoints list named templates; "default" is the chat one.
    for (const auto& entry : *it) {
      if (entry.is_object() && entry.contains("name") && entry["name"] == "default" &&
          entry.contains("template") && entry["template"].is_string()) {
        tmpl = entry["template"].get<std::string>();
      }
    }
  }
  return FromTemplate(tmpl, TokenString(config, "bos_token", ""),
                      TokenString(config, "eos_token", ""));
}

absl::StatusOr<std::string> ChatTemplate::Render(std::span<const ChatMessage> messages) const {
  if (family_ == Family::kUnsupported) return absl::InvalidArgumentError(unsupported_reason_);
  if (messages.empty()) return absl::InvalidArgumentError("messages must not be empty");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      return absl::InvalidArgumentError(absl::StrCat(
          "messages[", i, "].role must be system, user or assistant, got '", ToAbsl(role), "'"));
    }
  }

  std::string out;
  if (family_ == Family::kChatMl) {
    if (!default_system_.empty() && messages[0].role != "system") {
      absl::StrAppend(&out, "<|im_start|>system\n", ToAbsl(default_system_), "<|im_end|>\n");
    }
    for (const ChatMessage& m : messages) {
      absl::StrAppend(&out, "<|im_start|>", ToAbsl(m.role), "\n", ToAbsl(m.content),
                      "<|im_end|>\n");
    }
    out += "<|im_start|>assistant\n";
    return out;
  }

  // Mistral: the reference template (Mixtral-8x7B-Instruct-v0.1) has no system role and
  // raises unless roles alternate user/assistant starting with user.
  std::string system;
  size_t first = 0;
  if (messages[0].role == "system") {
    system = messages[0].content;
    first = 1;
  }
  if (first == messages.size()) {
    return absl::InvalidArgumentError("messages must contain a user message after the system one");
  }
  const std::string_view open = mistral_spaced_ ? "[INST] " : "[INST]";
  const std::string_view close = mistral_spaced_ ? " [/INST]" : "[/INST]";
  out = bos_token_;
  bool system_pending = !system.empty();
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const bool expect_user = (i - first) % 2 == 0;
    if ((m.role == "user") != expect_user || m.role == "system") {
      return absl::InvalidArgumentError(
          absl::StrCat("this model's chat template needs roles alternating user/assistant/user/... "
                       "(after one optional leading system message); messages[",
                       i, "] is '", ToAbsl(m.role), "'"));
    }
    if (m.role == "user") {
      absl::StrAppend(&out, ToAbsl(open));
      if (system_pending) {
        absl::StrAppend(&out, ToAbsl(system), "\n\n");
        system_pending = false;
      }
      absl::StrAppend(&out, ToAbsl(m.content), ToAbsl(close));
    } else {
      absl::StrAppend(&out, ToAbsl(m.content), ToAbsl(eos_token_));
    }
  }
  if (messages.back().role != "user") {
    return absl::InvalidArgumentError(
        "with this model's chat template the last message must be from the user");
  }
  return out;
}

}  // namespace moe::server

// Chat messages -> prompt text, for /v1/chat/completions. We do not run Jinja: the
// checkpoint's tokenizer_config.json "chat_template" is classified into one of the
// built-in families below, which are rendered in C++ exactly as the reference Jinja
// templates render them (tests/server/chat_template_test.cc holds jinja2's output). Any
// other template, or none, is unsupported and Render() says so (HTTP 400).
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace moe::server {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

class ChatTemplate {
 public:
  enum class Family {
    kUnsupported,
    // <|im_start|>role\ncontent<|im_end|>\n per message, then <|im_start|>assistant\n
    // (Qwen, OLMoE-instruct, ...). Detected by "<|im_start|>" in the template.
    kChatMl,
    // bos [INST] user [/INST]assistant eos ... (Mistral / Mixtral-Instruct). Detected by
    // "[INST]". Roles must alternate user/assistant; a system message is prepended to the
    // first user message followed by a blank line.
    kMistral,
  };

  // `template_text` is the "chat_template" string (empty: none); `bos_token` and
  // `eos_token` are the token strings Jinja would see as bos_token / eos_token.
  static ChatTemplate FromTemplate(std::string_view template_text, std::string bos_token,
                                   std::string eos_token);
  // Reads `dir`/tokenizer_config.json. A missing file or chat_template gives an
  // unsupported template whose error says so (the model still serves completions).
  static ChatTemplate FromModelDir(const std::string& dir);

  Family family() const { return family_; }
  // Renders the conversation, ending with the prompt for the assistant's next turn.
  // InvalidArgument: unsupported template (the message names the supported families),
  // an unknown role, or a conversation the family cannot express.
  absl::StatusOr<std::string> Render(std::span<const ChatMessage> messages) const;
  // Token strings that end an assistant turn (e.g. "<|im_end|>"): stop tokens for chat.
  const std::vector<std::string>& turn_end_tokens() const { return turn_end_tokens_; }

 private:
  Family family_ = Family::kUnsupported;
  std::string unsupported_reason_;
  std::string bos_token_;
  std::string eos_token_;
  std::string default_system_;  // ChatML: the system turn the template adds when none
  bool mistral_spaced_ = true;  // "[INST] x [/INST]" (true) or "[INST]x[/INST]"
  std::vector<std::string> turn_end_tokens_;
};

}  // namespace moe::server

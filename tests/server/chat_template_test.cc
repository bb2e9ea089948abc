// Chat template rendering. Expected strings are jinja2 3.1's rendering of the reference
// templates (models/default's ChatML, Qwen2-Instruct's, Mixtral-8x7B-Instruct-v0.1's),
// not output of our own code.
#include "server/chat_template.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/loader.h"

namespace moe::server {
namespace {

// Qwen2-Instruct: ChatML with a default system turn.
constexpr char kQwen2Template[] =
    R"({% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})";
// Mixtral-8x7B-Instruct-v0.1.
constexpr char kMistralTemplate[] =
    R"({{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %})";
// Llama-3's header-id template: neither family.
constexpr char kLlama3Template[] =
    R"({% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %})";

const std::vector<ChatMessage> kWithSystem = {{"system", "Be brief."},
                                              {"user", "Hi there"},
                                              {"assistant", "Hello!"},
                                              {"user", "What is 2+2?"}};
const std::vector<ChatMessage> kNoSystem = {
    {"user", "Hi there"}, {"assistant", "Hello!"}, {"user", "What is 2+2?"}};

TEST(ChatTemplateTest, DefaultModelIsChatMl) {
  ChatTemplate t = ChatTemplate::FromModelDir(DefaultModelDir());
  ASSERT_EQ(t.family(), ChatTemplate::Family::kChatMl);
  absl::StatusOr<std::string> text = t.Render(kWithSystem);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWhat is "
            "2+2?<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t.turn_end_tokens(), std::vector<std::string>{"<|im_end|>"});
}

TEST(ChatTemplateTest, ChatMlDefaultSystemTurn) {
  ChatTemplate t = ChatTemplate::FromTemplate(kQwen2Template, "", "<|im_end|>");
  ASSERT_EQ(t.family(), ChatTemplate::Family::kChatMl);
  absl::StatusOr<std::string> text = t.Render(kNoSystem);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi "
            "there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWhat "
            "is 2+2?<|im_end|>\n<|im_start|>assistant\n");
  // A system message of the caller's replaces the default one.
  text = t.Render(kWithSystem);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->rfind("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user", 0), 0u);
  EXPECT_EQ(text->find("helpful"), std::string::npos);
}

TEST(ChatTemplateTest, Mistral) {
  ChatTemplate t = ChatTemplate::FromTemplate(kMistralTemplate, "<s>", "</s>");
  ASSERT_EQ(t.family(), ChatTemplate::Family::kMistral);
  absl::StatusOr<std::string> text = t.Render(kNoSystem);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "<s>[INST] Hi there [/INST]Hello!</s>[INST] What is 2+2? [/INST]");
  EXPECT_EQ(t.turn_end_tokens(), std::vector<std::string>{"</s>"});
}

TEST(ChatTemplateTest, MistralSystemGoesIntoTheFirstUserTurn) {
  ChatTemplate t = ChatTemplate::FromTemplate(kMistralTemplate, "<s>", "</s>");
  absl::StatusOr<std::string> text = t.Render(kWithSystem);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "<s>[INST] Be brief.\n\nHi there [/INST]Hello!</s>[INST] What is 2+2? [/INST]");
}

TEST(ChatTemplateTest, MistralRolesMustAlternate) {
  ChatTemplate t = ChatTemplate::FromTemplate(kMistralTemplate, "<s>", "</s>");
  const std::vector<std::vector<ChatMessage>> bad = {
      {{"user", "a"}, {"user", "b"}},      {{"assistant", "a"}},
      {{"user", "a"}, {"assistant", "b"}}, {{"system", "s"}},
      {{"user", "a"}, {"system", "s"}},
  };
  for (const auto& messages : bad) {
    absl::StatusOr<std::string> text = t.Render(messages);
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument) << messages.size();
  }
}

TEST(ChatTemplateTest, UnknownRoleAndEmptyConversation) {
  ChatTemplate t = ChatTemplate::FromTemplate(kQwen2Template, "", "");
  absl::StatusOr<std::string> text = t.Render(std::vector<ChatMessage>{{"tool", "x"}});
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(text.status().message().find("role"), absl::string_view::npos);
  EXPECT_EQ(t.Render({}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, OtherTemplatesAreRefusedClearly) {
  for (const char* tmpl : {kLlama3Template, ""}) {
    ChatTemplate t = ChatTemplate::FromTemplate(tmpl, "", "");
    EXPECT_EQ(t.family(), ChatTemplate::Family::kUnsupported);
    absl::StatusOr<std::string> text = t.Render(kNoSystem);
    ASSERT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(text.status().message().find("ChatML"), absl::string_view::npos) << text.status();
    EXPECT_NE(text.status().message().find("not supported"), absl::string_view::npos)
        << text.status();
  }
  // A directory without tokenizer_config.json.
  ChatTemplate none = ChatTemplate::FromModelDir("/nonexistent");
  EXPECT_EQ(none.family(), ChatTemplate::Family::kUnsupported);
}

}  // namespace
}  // namespace moe::server

// Chat templates: the template text (before the first NUL) is classified, and the
// conversation after it (lines "role:content") rendered, or refused with a status.
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "server/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto [template_text, conversation] = moe::fuzz::SplitAtNul(data, size);
  const moe::server::ChatTemplate chat =
      moe::server::ChatTemplate::FromTemplate(template_text, "<s>", "</s>");
  std::vector<moe::server::ChatMessage> messages;
  size_t pos = 0;
  while (pos < conversation.size()) {
    size_t eol = conversation.find('\n', pos);
    if (eol == std::string_view::npos) eol = conversation.size();
    const std::string_view line = conversation.substr(pos, eol - pos);
    const size_t colon = line.find(':');
    messages.push_back(
        {std::string(line.substr(0, colon)),
         colon == std::string_view::npos ? "" : std::string(line.substr(colon + 1))});
    pos = eol + 1;
  }
  auto rendered = chat.Render(messages);
  if (rendered.ok() && chat.family() == moe::server::ChatTemplate::Family::kUnsupported) {
    __builtin_trap();  // an unsupported template never renders
  }
  return 0;
}

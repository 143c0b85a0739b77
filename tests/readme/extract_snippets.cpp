// SPDX-License-Identifier: Apache-2.0
// gpulife_readme_extract README.md out.cpp out.cu
//
// Writes every ```cpp block of README.md into one C++ file (and the blocks marked `cuda` into
// one CUDA file) that the test `readme.snippets` compiles, so that the README's code stays
// true. The convention (README, "README snippets"):
//
// - A block is the body of a function, in a namespace of its own; its #include lines go to the
//   top of the file. `#line` directives make compiler errors name README.md's lines.
// - An HTML comment that ends on the line right before the fence, and opens with `<!-- snippet`,
//   gives the block hidden code (GitHub does not show comments): the lines after `<!-- snippet`
//   up to `-->` go before the block, in the same scope (#include lines again to the top).
//   Words after `<!-- snippet` on its first line change how the block is compiled:
//     file   the block is at namespace scope (functions, classes, TEST(...)), not in a function
//     cuda   the block needs nvcc: it goes into the CUDA file, compiled where gpulife has CUDA
// - A block that defines `int main(` (at the start of a line) is a whole program: it is compiled
//   at namespace scope too, where its main is an ordinary function. Blocks are compiled, not
//   linked or run.
//
// Exit status 0, or 1 with README.md:line and the reason (an unclosed block, an unknown word).

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct Snippet {
  std::size_t fence_line = 0;   // 1-based line of the opening fence
  std::size_t hidden_line = 0;  // 1-based line of the first hidden line (0: none)
  std::vector<std::string> hidden;
  std::vector<std::string> code;
  bool file_scope = false;
  bool cuda = false;
};

[[noreturn]] void fail(const std::string& readme, std::size_t line, const std::string& why) {
  std::fprintf(stderr, "%s:%zu: %s\n", readme.c_str(), line, why.c_str());
  std::exit(1);
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r')) {
    text.remove_suffix(1);
  }
  return text;
}

bool is_include(std::string_view line) {
  line = trim(line);
  if (!line.starts_with("#")) return false;
  line.remove_prefix(1);
  return trim(line).starts_with("include");
}

/// The hidden code and mode of the comment that ends on `lines[end]`, if it is a snippet comment.
void read_comment(const std::string& readme, const std::vector<std::string>& lines, std::size_t end,
                  Snippet& snippet) {
  if (!trim(lines[end]).ends_with("-->")) return;
  std::size_t begin = end;
  while (true) {
    if (lines[begin].find("<!--") != std::string::npos) break;
    if (begin == 0) return;
    --begin;
  }
  std::string_view head = trim(lines[begin]);
  if (!head.starts_with("<!-- snippet")) return;
  head.remove_prefix(std::string_view("<!-- snippet").size());
  bool closes_here = false;
  if (head.ends_with("-->")) {
    head.remove_suffix(3);
    closes_here = true;
  }
  std::istringstream words{std::string(head)};
  for (std::string word; words >> word;) {
    if (word == ":") continue;
    if (word.back() == ':') word.pop_back();
    if (word == "file") {
      snippet.file_scope = true;
    } else if (word == "cuda") {
      snippet.cuda = true;
    } else {
      fail(readme, begin + 1,
           "unknown word '" + word + "' in a snippet comment (known: file, cuda)");
    }
  }
  if (closes_here) return;
  snippet.hidden_line = begin + 2;
  for (std::size_t i = begin + 1; i < end; ++i) snippet.hidden.push_back(lines[i]);
  std::string last(trim(lines[end]));
  last.resize(last.size() - 3);
  if (!trim(last).empty()) snippet.hidden.push_back(last);
}

void emit(std::ostream& out, const std::string& readme, const Snippet& s) {
  const std::string name = "readme_snippet_line_" + std::to_string(s.fence_line);
  out << "\nnamespace " << name << " {\n";
  if (!s.file_scope) out << "[[maybe_unused]] void snippet() {\n";
  std::size_t line = s.hidden_line;
  for (const std::string& text : s.hidden) {
    if (!is_include(text)) out << "#line " << line << " \"" << readme << "\"\n" << text << "\n";
    ++line;
  }
  line = s.fence_line + 1;
  out << "#line " << line << " \"" << readme << "\"\n";
  for (const std::string& text : s.code) out << (is_include(text) ? "" : text) << "\n";
  if (!s.file_scope) out << "}\n";
  out << "}  // namespace " << name << "\n";
}

void write(const std::string& path, const std::string& readme, const std::vector<Snippet>& all,
           bool cuda) {
  std::set<std::string> includes;
  std::size_t count = 0;
  for (const Snippet& s : all) {
    if (s.cuda != cuda) continue;
    ++count;
    for (const auto* lines : {&s.hidden, &s.code}) {
      for (const std::string& text : *lines) {
        if (is_include(text)) includes.insert(std::string(trim(text)));
      }
    }
  }
  std::ostringstream out;
  out << "// Generated from " << readme << " by tests/readme/extract_snippets.cpp: " << count
      << (cuda ? " cuda" : "") << (count == 1 ? " ```cpp block" : " ```cpp blocks")
      << ". Do not edit.\n";
  for (const std::string& include : includes) out << include << "\n";
  for (const Snippet& s : all) {
    if (s.cuda == cuda) emit(out, readme, s);
  }
  // Only a change makes the build compile it again.
  const std::string text = out.str();
  std::ifstream old(path, std::ios::binary);
  std::ostringstream previous;
  previous << old.rdbuf();
  if (old && previous.str() == text) return;
  old.close();
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << text;
  if (!file) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: gpulife_readme_extract README.md out.cpp out.cu\n");
    return 2;
  }
  const std::string readme = argv[1];
  std::ifstream in(readme);
  if (!in) fail(readme, 0, "cannot read it");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);

  std::vector<Snippet> snippets;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    std::string_view line = trim(lines[i]);
    if (!line.starts_with("```")) continue;
    // A fence of n backticks is closed by a line of at least n backticks alone (CommonMark), so
    // that a ```` block may show ``` lines.
    const std::size_t ticks = line.find_first_not_of('`') == std::string_view::npos
                                  ? line.size()
                                  : line.find_first_not_of('`');
    const std::string lang(trim(line.substr(ticks)));
    const std::size_t indent = lines[i].find('`');
    const std::size_t open = i;
    auto closes = [&](std::string_view text) {
      text = trim(text);
      return text.size() >= ticks && text.find_first_not_of('`') == std::string_view::npos;
    };
    std::vector<std::string> body;
    for (++i; i < lines.size() && !closes(lines[i]); ++i) {
      // a block inside a list item is indented like its fence
      const std::string& text = lines[i];
      body.push_back(text.compare(0, indent, std::string(indent, ' ')) == 0 ? text.substr(indent)
                                                                            : text);
    }
    if (i == lines.size()) fail(readme, open + 1, "a ``` block that never closes");
    if (lang != "cpp" && lang != "c++") continue;
    Snippet snippet;
    snippet.fence_line = open + 1;
    snippet.code = std::move(body);
    if (open > 0) read_comment(readme, lines, open - 1, snippet);
    // A whole program: at namespace scope, where its main is an ordinary function.
    for (const std::string& text : snippet.code) {
      if (text.starts_with("int main(")) snippet.file_scope = true;
    }
    snippets.push_back(std::move(snippet));
  }
  if (snippets.empty()) fail(readme, 1, "no ```cpp block at all: is this the README?");
  write(argv[2], readme, snippets, false);
  write(argv[3], readme, snippets, true);
  std::printf("%zu ```cpp blocks of %s\n", snippets.size(), readme.c_str());
  return 0;
}

// SPDX-License-Identifier: BSD-3-Clause
#include "gapx/json.hpp"

#include "gapx/errors.hpp"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <locale>
#include <sstream>

namespace gapx {

/// Recursive descent over the text; every error names its byte offset.
class JsonParser {
  public:
    explicit JsonParser(const std::string &text) : text_(text) {}

    Json document() {
        Json value = parse_value(0);
        skip_space();
        if (pos_ != text_.size()) {
            fail("unexpected text after the JSON value");
        }
        return value;
    }

  private:
    static constexpr int max_depth = 256;
    const std::string &text_;
    size_t pos_ = 0;

    [[noreturn]] void fail(const std::string &what) const {
        throw InvalidArgument("invalid JSON at byte " + std::to_string(pos_) + ": " + what);
    }
    void skip_space() {
        while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' ||
                                       text_[pos_] == '\r' || text_[pos_] == '\t')) {
            ++pos_;
        }
    }
    char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
    void expect(const char *word) {
        for (const char *c = word; *c != '\0'; ++c, ++pos_) {
            if (peek() != *c) {
                fail(std::string("expected '") + word + "'");
            }
        }
    }

    Json parse_value(int depth) {
        if (depth > max_depth) {
            fail("nested too deeply");
        }
        skip_space();
        Json out;
        const char c = peek();
        if (c == '{') {
            out.kind_ = Json::Kind::Object;
            ++pos_;
            skip_space();
            if (peek() == '}') {
                ++pos_;
                return out;
            }
            while (true) {
                skip_space();
                if (peek() != '"') {
                    fail("expected a string key");
                }
                std::string key = parse_string();
                skip_space();
                if (peek() != ':') {
                    fail("expected ':'");
                }
                ++pos_;
                out.object_[key] = parse_value(depth + 1);
                skip_space();
                if (peek() == ',') {
                    ++pos_;
                } else if (peek() == '}') {
                    ++pos_;
                    return out;
                } else {
                    fail("expected ',' or '}'");
                }
            }
        }
        if (c == '[') {
            out.kind_ = Json::Kind::Array;
            ++pos_;
            skip_space();
            if (peek() == ']') {
                ++pos_;
                return out;
            }
            while (true) {
                out.array_.push_back(parse_value(depth + 1));
                skip_space();
                if (peek() == ',') {
                    ++pos_;
                } else if (peek() == ']') {
                    ++pos_;
                    return out;
                } else {
                    fail("expected ',' or ']'");
                }
            }
        }
        if (c == '"') {
            out.kind_ = Json::Kind::String;
            out.string_ = parse_string();
            return out;
        }
        if (c == 't' || c == 'f') {
            out.kind_ = Json::Kind::Bool;
            out.boolean_ = c == 't';
            expect(c == 't' ? "true" : "false");
            return out;
        }
        if (c == 'n') {
            expect("null");
            return out;
        }
        parse_number(out);
        return out;
    }

    void parse_number(Json &out) {
        const size_t start = pos_;
        if (peek() == '-') {
            ++pos_;
        }
        if (!std::isdigit(static_cast<unsigned char>(peek()))) {
            fail("expected a value");
        }
        bool integer = true;
        while (pos_ < text_.size()) {
            const char c = text_[pos_];
            if (c == '.' || c == 'e' || c == 'E') {
                integer = false;
            } else if (!std::isdigit(static_cast<unsigned char>(c)) && c != '+' && c != '-') {
                break;
            }
            ++pos_;
        }
        const std::string token = text_.substr(start, pos_ - start);
        // Classic locale: the decimal point is '.' whatever the host program set.
        std::istringstream stream(token);
        stream.imbue(std::locale::classic());
        Real value = 0.0;
        stream >> value;
        if (stream.fail() || !stream.eof() || !std::isfinite(value)) {
            pos_ = start;
            fail("bad number '" + token + "'");
        }
        out.kind_ = Json::Kind::Number;
        out.number_ = value;
        if (integer) {
            errno = 0;
            const long long as_integer = std::strtoll(token.c_str(), nullptr, 10);
            out.integer_ = errno == 0;
            out.integer_value_ = static_cast<Index>(as_integer);
        }
    }

    static void append_utf8(std::string &out, unsigned code) {
        if (code < 0x80) {
            out += static_cast<char>(code);
        } else if (code < 0x800) {
            out += static_cast<char>(0xC0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3F));
        } else if (code < 0x10000) {
            out += static_cast<char>(0xE0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (code >> 18));
            out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
        }
    }

    unsigned hex4() {
        if (pos_ + 4 > text_.size()) {
            fail("truncated \\u escape");
        }
        unsigned code = 0;
        for (int k = 0; k < 4; ++k) {
            const char c = text_[pos_++];
            code <<= 4;
            if (c >= '0' && c <= '9') {
                code |= static_cast<unsigned>(c - '0');
            } else if (c >= 'a' && c <= 'f') {
                code |= static_cast<unsigned>(c - 'a' + 10);
            } else if (c >= 'A' && c <= 'F') {
                code |= static_cast<unsigned>(c - 'A' + 10);
            } else {
                fail("bad \\u escape");
            }
        }
        return code;
    }

    std::string parse_string() {
        ++pos_; // opening quote
        std::string out;
        while (true) {
            if (pos_ >= text_.size()) {
                fail("unterminated string");
            }
            const char c = text_[pos_++];
            if (c == '"') {
                return out;
            }
            if (static_cast<unsigned char>(c) < 0x20) {
                fail("control character in a string");
            }
            if (c != '\\') {
                out += c;
                continue;
            }
            const char e = peek();
            ++pos_;
            switch (e) {
            case '"': out += '"'; break;
            case '\\': out += '\\'; break;
            case '/': out += '/'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 't': out += '\t'; break;
            case 'u': {
                unsigned code = hex4();
                if (code >= 0xD800 && code < 0xDC00 && peek() == '\\' && pos_ + 1 < text_.size() &&
                    text_[pos_ + 1] == 'u') {
                    pos_ += 2;
                    const unsigned low = hex4();
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                }
                append_utf8(out, code);
                break;
            }
            default: fail("bad escape in a string");
            }
        }
    }
};

Json Json::parse(const std::string &text) { return JsonParser(text).document(); }

namespace {
[[noreturn]] void wrong_kind(const std::string &what, const char *expected) {
    throw InvalidArgument(what + " must be " + expected);
}
} // namespace

Real Json::number(const std::string &what) const {
    if (kind_ != Kind::Number) {
        wrong_kind(what, "a number");
    }
    return number_;
}

Index Json::integer(const std::string &what) const {
    if (!is_integer()) {
        wrong_kind(what, "an integer");
    }
    return integer_value_;
}

bool Json::boolean(const std::string &what) const {
    if (kind_ != Kind::Bool) {
        wrong_kind(what, "true or false");
    }
    return boolean_;
}

const std::string &Json::string(const std::string &what) const {
    if (kind_ != Kind::String) {
        wrong_kind(what, "a string");
    }
    return string_;
}

const std::vector<Json> &Json::array(const std::string &what) const {
    if (kind_ != Kind::Array) {
        wrong_kind(what, "a list");
    }
    return array_;
}

const std::map<std::string, Json> &Json::object(const std::string &what) const {
    if (kind_ != Kind::Object) {
        wrong_kind(what, "an object");
    }
    return object_;
}

const Json *Json::find(const std::string &key) const {
    if (kind_ != Kind::Object) {
        return nullptr;
    }
    const auto found = object_.find(key);
    return found == object_.end() ? nullptr : &found->second;
}

void Json::set(const std::string &key, const Json &value) {
    if (kind_ != Kind::Object) {
        wrong_kind("a JSON value given members", "an object");
    }
    object_[key] = value;
}

const Json &Json::at(const std::string &key, const std::string &what) const {
    const auto &members = object(what);
    const auto found = members.find(key);
    if (found == members.end()) {
        throw InvalidArgument(what + " has no '" + key + "'");
    }
    return found->second;
}

} // namespace gapx

#!/usr/bin/python3
"""Regenerates stories260K_golden.json: token ids from llama.cpp (the independent peer).

Usage (from the repo root, after `sh /work/shared/peer/install.sh`):
  /usr/bin/python3 tests/testdata/tokenizer/make_stories260K_golden.py \
      /work/shared/peer/llama_peer.mjs models/stories260K.gguf \
      > tests/testdata/tokenizer/stories260K_golden.json

Each string goes through `node llama_peer.mjs tokenize MODEL TEXT`, i.e. llama.cpp 0.5.0's
llama_tokenize(add_special=false, parse_special=false) with BOS (id 1) prepended by the peer.
The "user_defined" section does the same on a copy of the model (in a temporary directory)
whose tokenizer.ggml.token_type marks USER_DEFINED_IDS as USER_DEFINED (4).
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

LONG = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n"
    "Lily's mom said, \"Be careful, Lily!\" Lily smiled and ran to the swings. The sun was "
    "warm and the birds sang. They played all day until it was time to go home. The end."
)

STRINGS = [
    "Once upon a time",
    "",
    "a",
    "Hello, world!",
    " leading space",
    "trailing space ",
    "  two leading and two trailing  ",
    "multiple   spaces   inside",
    "   ",
    "\n",
    "line one\nline two\n\nline four\n",
    "mixed\r\nCRLF line ends",
    "tab\tseparated\tvalues\t",
    "digits 0123456789 and 3.14159, 1,000,000",
    "Punctuation: !?.,;:'\"()[]{}<>-_=+*&^%$#@~`|\\/",
    "<s> and </s> are not special here",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00dcber stra\u00dfe",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "\u4e2d\u6587\u5b57\u7b26\u548cEnglish\u6df7\u5408",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0645\u0631\u062d\u0628\u0627",
    "emoji \U0001F600\U0001F389\U0001F44D\U0001F3FD and \u2764\ufe0f",
    "ZWJ family \U0001F468\u200d\U0001F469\u200d\U0001F467 flag \U0001F1EB\U0001F1F7",
    "Lily's mom said, \"Don't go!\"",
    "The quick brown fox jumps over the lazy dog.",
    "combining e\u0301 and \u00e9 differ",
    LONG,
]

# ",", "ing", "ily", "ittle", "itt": single character, overlapping and nested pieces.
USER_DEFINED_IDS = [432, 299, 310, 375, 362]
USER_DEFINED_STRINGS = [
    "",
    ",",
    "ing",
    "Once upon a time, there was a little girl named Lily, sitting.",
    ",leading comma",
    "trailing comma,",
    ", ,  ,",
    "Lily and Billy are smiling",
    "littlest glitter, kitten",
    "a,b,,c",
]


def tokenize_all(peer, model, strings):
    cases = []
    for text in strings:
        out = subprocess.run(["node", peer, "tokenize", model, text], check=True,
                             capture_output=True, text=True).stdout
        result = json.loads(out)
        assert result["prompt"] == text, (result["prompt"], text)
        cases.append({"text": text, "ids": result["ids"]})
    return cases


def mark_user_defined(model, ids, out_path):
    data = bytearray(open(model, "rb").read())
    key = b"tokenizer.ggml.token_type"
    pos = data.index(key) + len(key)
    value_type, elem_type, count = struct.unpack_from("<IIQ", data, pos)
    assert value_type == 9 and elem_type == 5, (value_type, elem_type)  # array of int32
    for i in ids:
        assert i < count
        struct.pack_into("<i", data, pos + 16 + 4 * i, 4)
    open(out_path, "wb").write(data)


def main():
    peer, model = sys.argv[1], sys.argv[2]
    cases = tokenize_all(peer, model, STRINGS)
    with tempfile.TemporaryDirectory() as tmp:
        patched = os.path.join(tmp, "user_defined.gguf")
        mark_user_defined(model, USER_DEFINED_IDS, patched)
        user_defined_cases = tokenize_all(peer, patched, USER_DEFINED_STRINGS)
    doc = {
        "_comment": (
            "Token ids of stories260K.gguf's vocabulary from llama.cpp 0.5.0 (node-llama-cpp "
            "3.22.1, /work/shared/peer): `node llama_peer.mjs tokenize models/stories260K.gguf "
            "TEXT`, which is llama_tokenize(add_special=false, parse_special=false) with BOS (1) "
            "prepended, i.e. BpeTokenizer::Encode(text, /*add_bos=*/true). Regenerate with "
            "tests/testdata/tokenizer/make_stories260K_golden.py (usage in its docstring). "
            "\"user_defined\": the same on a copy of the model whose tokenizer.ggml.token_type "
            "marks the listed ids USER_DEFINED (4)."),
        "cases": cases,
        "user_defined": {"ids": USER_DEFINED_IDS, "cases": user_defined_cases},
    }
    json.dump(doc, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

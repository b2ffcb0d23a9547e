# Turns the text file IN into a C source OUT defining
# `const char sa_schema_sql[]` (NUL-terminated) and its length.
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE ${OUT} "/* generated from ${IN}; do not edit */\n#include <stddef.h>\n"
  "const char sa_schema_sql[] = {${bytes}0x00};\n"
  "const size_t sa_schema_sql_len = sizeof sa_schema_sql - 1;\n")

# Turns text files into a C source OUT defining `const char NAME[]`
# (NUL-terminated) and `const size_t NAME_len`. IN is one file, or several
# separated by commas, concatenated in that order (a Lua script after the
# pieces it shares with others). With LUA set, whole-line comments ("--"
# after nothing but blanks) are left out, so the script Redis is sent on
# every call is the code alone; the file keeps its contract for the reader.
string(REPLACE "," ";" files "${IN}")
set(hex "")
foreach(f IN LISTS files)
  if(LUA)
    file(READ ${f} text)
    # A leading newline lets the first line match like the others.
    string(REGEX REPLACE "\n[ \t]*--[^\n]*" "" text "\n${text}")
    string(REGEX REPLACE "^\n" "" text "${text}")
    string(HEX "${text}" part)
  else()
    file(READ ${f} part HEX)
  endif()
  string(APPEND hex "${part}")
endforeach()
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE ${OUT} "/* generated from ${IN}; do not edit */\n#include <stddef.h>\n"
  "const char ${NAME}[] = {${bytes}0x00};\n"
  "const size_t ${NAME}_len = sizeof ${NAME} - 1;\n")

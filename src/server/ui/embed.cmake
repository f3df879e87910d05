# Compiles the status page into the binary: src/server/ui/index.html becomes
# the bytes of ui_page (server/ui.h) in a generated C file, beside a
# Content-Security-Policy that allows exactly the page's one inline <script>
# and one inline <style>, by their sha256, and nothing from elsewhere. Run at
# configure time; a change of the page makes the next build configure again.

# base64 of the SHA-256 of text, as CSP hash sources spell it.
function(ui_sha256_base64 text out)
  string(SHA256 hex "${text}")
  set(alphabet "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
  # 32 bytes and one zero byte: eleven groups of three bytes, four characters
  # each; the last character encodes only the added byte and becomes '='.
  string(APPEND hex "00")
  set(b64 "")
  foreach(group RANGE 0 10)
    math(EXPR pos "${group} * 6")
    string(SUBSTRING "${hex}" ${pos} 6 bytes)
    math(EXPR value "0x${bytes}")
    foreach(shift 18 12 6 0)
      math(EXPR index "(${value} >> ${shift}) & 63")
      string(SUBSTRING "${alphabet}" ${index} 1 char)
      string(APPEND b64 "${char}")
    endforeach()
  endforeach()
  string(SUBSTRING "${b64}" 0 43 b64)
  set(${out} "${b64}=" PARENT_SCOPE)
endfunction()

# The text between <tag> and </tag>; the page must hold exactly one.
function(ui_inline_block html tag out)
  string(FIND "${html}" "<${tag}>" start)
  string(FIND "${html}" "</${tag}>" end)
  string(FIND "${html}" "<${tag}" last REVERSE)
  if(start EQUAL -1 OR end EQUAL -1 OR NOT last EQUAL start)
    message(FATAL_ERROR "src/server/ui/index.html must hold exactly one <${tag}> ... </${tag}> "
                        "(no attributes): its CSP hash is computed from it")
  endif()
  string(LENGTH "<${tag}>" open_len)
  math(EXPR start "${start} + ${open_len}")
  math(EXPR len "${end} - ${start}")
  string(SUBSTRING "${html}" ${start} ${len} block)
  set(${out} "${block}" PARENT_SCOPE)
endfunction()

function(ui_embed_page target)
  set(page ${CMAKE_SOURCE_DIR}/src/server/ui/index.html)
  set(template ${CMAKE_SOURCE_DIR}/src/server/ui/page.c.in)
  set_property(DIRECTORY ${CMAKE_SOURCE_DIR} APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
               ${page} ${template} ${CMAKE_SOURCE_DIR}/src/server/ui/embed.cmake)
  file(READ ${page} html)
  ui_inline_block("${html}" script script)
  ui_inline_block("${html}" style style)
  ui_sha256_base64("${script}" script_hash)
  ui_sha256_base64("${style}" style_hash)
  set(UI_PAGE_CSP "default-src 'none'; script-src 'sha256-${script_hash}'; style-src 'sha256-${style_hash}'; \
connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
  file(READ ${page} hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," UI_PAGE_BYTES "${hex}")
  # 16 bytes a line, so the generated file stays readable in an editor.
  string(REPEAT "0x[0-9a-f][0-9a-f]," 16 line)
  string(REGEX REPLACE "(${line})" "\\1\n" UI_PAGE_BYTES "${UI_PAGE_BYTES}")
  set(generated ${CMAKE_BINARY_DIR}/generated/ui_page.c)
  configure_file(${template} ${generated} @ONLY)
  target_sources(${target} PRIVATE ${generated})
endfunction()

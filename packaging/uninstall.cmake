# make uninstall: removes every file that the last make install from this
# build directory put (its install_manifest.txt), then the directories that
# belong to duckstore alone, when empty. Shared directories (bin/, man/) stay.
#   cmake -DMANIFEST=build/install_manifest.txt -DDESTDIR=... -DPREFIX=/usr/local -P packaging/uninstall.cmake
if(NOT EXISTS "${MANIFEST}")
  message(FATAL_ERROR "${MANIFEST} not found: nothing was installed from this build directory "
                      "(make uninstall takes the BUILD_DIR of make install)")
endif()
set(root "${DESTDIR}${PREFIX}")
file(STRINGS "${MANIFEST}" files)
# The manifest lists paths under the prefix, without DESTDIR. Refuse before
# removing anything when the install had another prefix.
foreach(f IN LISTS files)
  string(FIND "${f}" "${PREFIX}/" at)
  if(NOT at EQUAL 0)
    message(FATAL_ERROR "${MANIFEST} lists ${f}, outside PREFIX=${PREFIX}: run make uninstall with the "
                        "PREFIX (and DESTDIR) of the install")
  endif()
endforeach()
set(removed 0)
foreach(f IN LISTS files)
  if(EXISTS "${DESTDIR}${f}" OR IS_SYMLINK "${DESTDIR}${f}")
    file(REMOVE "${DESTDIR}${f}")
    math(EXPR removed "${removed} + 1")
  endif()
endforeach()
foreach(d share/doc/duckstore/examples/config share/doc/duckstore/examples share/doc/duckstore lib/duckstore)
  if(IS_DIRECTORY "${root}/${d}")
    file(GLOB left "${root}/${d}/*")
    if(NOT left)
      file(REMOVE_RECURSE "${root}/${d}")
    endif()
  endif()
endforeach()
file(REMOVE "${MANIFEST}")
message(STATUS "removed ${removed} files from ${root}")

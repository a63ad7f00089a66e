# `cmake --install` and the Debian package (CPack DEB, tools/package.sh): the binary, the packaged
# configuration, the systemd unit, the sysusers.d entry and the man pages, which tools/man.py
# makes from docs/man/spliced.8.md and docs/CONFIG.md.
include(GNUInstallDirs)
find_package(Python3 REQUIRED COMPONENTS Interpreter)

# Debian 12 keeps units in /lib/systemd/system; a plain install keeps them under the prefix.
set(SPLICED_SYSTEMD_UNIT_DIR "${CMAKE_INSTALL_LIBDIR}/systemd/system" CACHE STRING
    "Where the systemd unit is installed (relative to the prefix, or absolute)")
set(SPLICED_SYSUSERS_DIR "${CMAKE_INSTALL_LIBDIR}/sysusers.d" CACHE STRING
    "Where the sysusers.d entry is installed (relative to the prefix, or absolute)")
set(SPLICED_CONFDIR "${CMAKE_INSTALL_FULL_SYSCONFDIR}/spliced")
set(SPLICED_SBINDIR "${CMAKE_INSTALL_FULL_SBINDIR}")

set(man_dir ${CMAKE_BINARY_DIR}/man)
set(man_pages "")
foreach(page "spliced.8|${PROJECT_SOURCE_DIR}/docs/man/spliced.8.md|System Administration|zero-copy log collector and TCP proxy"
             "spliced.yaml.5|${PROJECT_SOURCE_DIR}/docs/CONFIG.md|File Formats|configuration file of spliced(8)")
  string(REPLACE "|" ";" parts "${page}")
  list(GET parts 0 file)
  list(GET parts 1 src)
  list(GET parts 2 title)
  list(GET parts 3 desc)
  string(REGEX MATCH "^(.*)\\.([0-9])$" _ "${file}")
  set(name ${CMAKE_MATCH_1})
  set(section ${CMAKE_MATCH_2})
  add_custom_command(OUTPUT ${man_dir}/${file}.gz
    COMMAND ${CMAKE_COMMAND} -E make_directory ${man_dir}
    COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/tools/man.py ${src} ${man_dir}/${file}
            ${name} ${section} ${title} --description ${desc} --version ${PROJECT_VERSION}
    COMMAND gzip -9nf ${man_dir}/${file}
    DEPENDS ${src} ${PROJECT_SOURCE_DIR}/tools/man.py
    COMMENT "Man page ${file}" VERBATIM)
  list(APPEND man_pages ${man_dir}/${file}.gz)
  install(FILES ${man_dir}/${file}.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
endforeach()
add_custom_target(man ALL DEPENDS ${man_pages})

set(SPLICED_DEB_MAINTAINER "spliced maintainers <maintainers@spliced.example.org>" CACHE STRING
    "The Maintainer field of the Debian package and its changelog")
set(SPLICED_VERSION ${PROJECT_VERSION})
configure_file(${PROJECT_SOURCE_DIR}/conf/packaging/spliced.service.in
               ${CMAKE_BINARY_DIR}/packaging/spliced.service @ONLY)
configure_file(${PROJECT_SOURCE_DIR}/conf/packaging/changelog
               ${CMAKE_BINARY_DIR}/packaging/changelog @ONLY)
add_custom_command(OUTPUT ${CMAKE_BINARY_DIR}/packaging/changelog.gz
  COMMAND gzip -9nkf ${CMAKE_BINARY_DIR}/packaging/changelog
  DEPENDS ${CMAKE_BINARY_DIR}/packaging/changelog VERBATIM)
add_custom_target(changelog ALL DEPENDS ${CMAKE_BINARY_DIR}/packaging/changelog.gz)

install(TARGETS spliced RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
install(FILES ${PROJECT_SOURCE_DIR}/conf/packaging/spliced.yaml DESTINATION ${CMAKE_INSTALL_SYSCONFDIR}/spliced)
install(FILES ${CMAKE_BINARY_DIR}/packaging/spliced.service DESTINATION ${SPLICED_SYSTEMD_UNIT_DIR})
install(FILES ${PROJECT_SOURCE_DIR}/conf/packaging/spliced.sysusers DESTINATION ${SPLICED_SYSUSERS_DIR}
        RENAME spliced.conf)
install(FILES ${PROJECT_SOURCE_DIR}/conf/packaging/copyright
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/spliced)
install(FILES ${CMAKE_BINARY_DIR}/packaging/changelog.gz
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/spliced)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/docs/OPERATIONS.md
              ${PROJECT_SOURCE_DIR}/docs/CONFIG.md
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/spliced)

# The Debian package.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME spliced)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${SPLICED_DEB_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "zero-copy log collector and TCP proxy (splice)")
string(CONCAT CPACK_PACKAGE_DESCRIPTION
    "spliced accepts TCP and Unix stream connections and moves their bytes with\n"
    "splice(2): into rotating, optionally compressed archive files (log collection\n"
    "from rsyslog, Fluent Bit, Vector and other senders), or to healthy upstreams\n"
    "as a TCP load balancer. It has a status page, Prometheus metrics and an HTTP\n"
    "archive endpoint.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/conf/packaging/conffiles ${PROJECT_SOURCE_DIR}/conf/packaging/postinst
    ${PROJECT_SOURCE_DIR}/conf/packaging/prerm ${PROJECT_SOURCE_DIR}/conf/packaging/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_PACKAGE_DIRECTORY ${CMAKE_BINARY_DIR}/package)
include(CPack)

# kvserve_cc_library(NAME SRCS ... DEPS ...): a static library rooted at the repo for includes.
function(kvserve_cc_library NAME)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_library(${NAME} STATIC ${ARG_SRCS})
  target_include_directories(${NAME} PUBLIC ${PROJECT_SOURCE_DIR})
  target_compile_options(${NAME} PRIVATE ${KVSERVE_WARNINGS} ${KVSERVE_ARCH_FLAGS})
  target_link_libraries(${NAME} PUBLIC ${ARG_DEPS})
endfunction()

# kvserve_cc_test(NAME SRCS ... DEPS ... LABELS ... [TIMEOUT s]): a GoogleTest binary registered
# with CTest; every test case is discovered and labelled (unit, integration, e2e).
function(kvserve_cc_test NAME)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_executable(${NAME} ${ARG_SRCS})
  target_include_directories(${NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_options(${NAME} PRIVATE ${KVSERVE_WARNINGS} ${KVSERVE_ARCH_FLAGS})
  target_compile_definitions(${NAME} PRIVATE
    KVSERVE_SOURCE_DIR="${PROJECT_SOURCE_DIR}" KVSERVE_BINARY_DIR="${PROJECT_BINARY_DIR}")
  target_link_libraries(${NAME} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  gtest_discover_tests(${NAME}
    DISCOVERY_TIMEOUT 60
    PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
endfunction()

/* libFuzzer entry point of the SQL builders (make fuzz). */
#include "fuzz_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_sql_input(data, size);
}

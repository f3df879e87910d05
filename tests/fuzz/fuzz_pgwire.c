/* libFuzzer entry point of the PostgreSQL protocol's framing (make fuzz). */
#include "fuzz_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_pgwire_input(data, size);
}

/* libFuzzer entry point of the pgoutput decoder (make fuzz). */
#include "fuzz_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_pgoutput_input(data, size);
}

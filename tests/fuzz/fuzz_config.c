/* libFuzzer entry point of the config loader (make fuzz). */
#include "fuzz_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_config_input(data, size);
}

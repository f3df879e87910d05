/* libFuzzer entry point of the binary COPY decoder (make fuzz). */
#include "fuzz_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_copy_decoder_input(data, size);
}

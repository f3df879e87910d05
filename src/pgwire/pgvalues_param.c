/* Bind parameters: the text or binary form of a value of the OID a driver
 * sends, as the DuckDB value bound in its place, and the OID a statement's
 * parameter is described as. */
#include "pgwire/pgvalues.h"

#include "pgwire/pgvalues_internal.h"

duckdb_value pgv_param_value(uint32_t oid, int format, const char *data, int32_t len, ds_error *err)
{
    if (len < 0)
        return duckdb_create_null_value();
    if (format != 0) {
        ds_error_set(err, DS_ERR_USAGE, "binary parameters of type %u are not supported; send them as text",
                     oid);
        return NULL;
    }
    return duckdb_create_varchar_length(data, (idx_t)len);
}

uint32_t pgv_param_oid(duckdb_type t)
{
    (void)t;
    return PGV_OID_TEXT;
}

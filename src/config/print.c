/* cfg_print: the resolved config as YAML (`duckstore config`), so people see
 * what ${VAR} expansion and defaults produced. Passwords are masked. Each
 * section, saved as a file of its own, reads back unchanged. */
#include "config/config.h"

#include <stdlib.h>
#include <string.h>

/* A '$' that the loader would expand ("${", "$$") is doubled, so the
 * output means the same when it is loaded again. */
static bool needs_dollar_escape(const char *c)
{
    return c[0] == '$' && (c[1] == '$' || c[1] == '{');
}

/* The escape a double-quoted scalar needs for the UTF-8 character at c when
 * YAML reads it as a line break (NEL, LS, PS) or does not allow it in a
 * stream (the C1 controls, U+FFFE, U+FFFF); NULL for any other. *len is
 * the character's length in bytes. Such values never go in a block. */
static const char *unicode_escape(const unsigned char *c, size_t *len, char buf[8])
{
    if (c[0] == 0xc2 && c[1] >= 0x80 && c[1] <= 0x9f) {
        *len = 2;
        if (c[1] == 0x85)
            return "\\N";
        snprintf(buf, 8, "\\x%02x", c[1]);
        return buf;
    }
    if (c[0] == 0xe2 && c[1] == 0x80 && (c[2] == 0xa8 || c[2] == 0xa9)) {
        *len = 3;
        return c[2] == 0xa8 ? "\\L" : "\\P";
    }
    if (c[0] == 0xef && c[1] == 0xbf && (c[2] == 0xbe || c[2] == 0xbf)) {
        *len = 3;
        return c[2] == 0xbe ? "\\uFFFE" : "\\uFFFF";
    }
    return NULL;
}

/* Double-quoted YAML scalar: safe for any UTF-8 text. */
static void print_quoted(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char buf[8];
        size_t len;
        const char *esc = unicode_escape(c, &len, buf);
        if (esc != NULL) {
            fputs(esc, out);
            c += len - 1;
        } else if (*c == '"' || *c == '\\')
            fprintf(out, "\\%c", *c);
        else if (*c == '\n')
            fputs("\\n", out);
        else if (*c == '\t')
            fputs("\\t", out);
        else if (*c < 0x20 || *c == 0x7f)
            fprintf(out, "\\x%02x", *c);
        else if (needs_dollar_escape((const char *)c))
            fputs("$$", out);
        else
            fputc(*c, out);
    }
    fputc('"', out);
}

/* Literal block scalars keep every character except control characters
 * other than tab and newline and those unicode_escape() handles; values
 * with those are printed double-quoted instead. */
static bool fits_block(const char *s)
{
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char buf[8];
        size_t len;
        if ((*c < 0x20 && *c != '\n' && *c != '\t') || *c == 0x7f || unicode_escape(c, &len, buf) != NULL)
            return false;
    }
    return s[0] != '\0';
}

/* `key: |` with the text indented by four spaces. The chomping indicator
 * keeps trailing newlines exact; an indentation indicator is needed when
 * the text starts with a space, a tab or an empty line (libyaml will not
 * guess the indentation from a line that starts with a tab). */
static void print_block(FILE *out, const char *key, const char *s)
{
    if (!fits_block(s)) {
        fprintf(out, "  %s: ", key);
        print_quoted(out, s);
        fputc('\n', out);
        return;
    }
    size_t len = strlen(s), trailing = 0;
    while (trailing < len && s[len - 1 - trailing] == '\n')
        trailing++;
    const char *chomp = trailing == 0 ? "-" : trailing == 1 ? "" : "+";
    const char *indent = s[0] == ' ' || s[0] == '\t' || s[0] == '\n' ? "2" : "";
    fprintf(out, "  %s: |%s%s\n", key, indent, chomp);

    const char *line = s;
    const char *end = s + len - (trailing > 0 ? 1 : 0);
    while (line <= end && *line) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        if (n > 0)
            fputs("    ", out);
        for (size_t i = 0; i < n; i++) {
            if (needs_dollar_escape(line + i))
                fputc('$', out);
            fputc(line[i], out);
        }
        fputc('\n', out);
        if (nl == NULL || nl >= end)
            break;
        line = nl + 1;
    }
}

static void print_string(FILE *out, const char *key, const char *s)
{
    if (s == NULL)
        return;
    fprintf(out, "  %s: ", key);
    print_quoted(out, s);
    fputc('\n', out);
}

/* Shortest decimal that reads back as the same double. */
static void print_number(FILE *out, const char *key, double v)
{
    char buf[64];
    for (int precision = 15; precision <= 17; precision++) {
        snprintf(buf, sizeof buf, "%.*g", precision, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    fprintf(out, "  %s: %s\n", key, buf);
}

/* `[a, "b c"]` and a newline. */
static void print_list(FILE *out, const cfg_key *list)
{
    fputc('[', out);
    for (size_t i = 0; i < list->n; i++) {
        fputs(i ? ", " : "", out);
        print_quoted(out, list->cols[i]);
    }
    fputs("]\n", out);
}

static const char *yes_no(bool b)
{
    return b ? "true" : "false";
}

void cfg_print(FILE *out, const cfg_config *cfg)
{
    const cfg_store *st = &cfg->store;
    fprintf(out, "# resolved config of %s (${VAR} expanded, defaults filled in, passwords masked)\n",
            cfg->dir ? cfg->dir : "(none)");
    fputs("duckdb:\n", out);
    fprintf(out, "  enabled: %s\n", yes_no(st->enabled));
    print_string(out, "path", st->path);
    fprintf(out, "  sync_mode: %s\n", cfg_sync_mode_name(st->sync_mode));
    fprintf(out, "  sync_workers: %d\n", st->sync_workers);
    fprintf(out, "  sync_chunk_size: %d\n", st->sync_chunk_size);
    fprintf(out, "  max_sync_rows: %lld\n", (long long)st->max_sync_rows);
    fprintf(out, "  query_concurrency: %d\n", st->query_concurrency);
    fprintf(out, "  query_max_rows: %lld\n", (long long)st->query_max_rows);
    print_string(out, "memory_limit", st->memory_limit);
    if (st->query_memory_limit != NULL)
        print_string(out, "query_memory_limit", st->query_memory_limit);
    print_string(out, "read_memory_limit",
                 st->read_memory_limit != NULL ? st->read_memory_limit : CFG_READ_MEMORY_LIMIT_DEFAULT);
    fprintf(out, "  threads: %d\n", st->threads);
    if (st->read_threads >= 0)
        fprintf(out, "  read_threads: %d\n", st->read_threads);
    fprintf(out, "  read_concurrency: %d\n", cfg_read_concurrency(st));
    print_number(out, "read_turn_seconds", st->read_turn_s);
    fprintf(out, "  max_idle_source_connections: %d\n", st->max_idle_source_connections);
    print_number(out, "idle_source_connection_timeout", st->idle_source_connection_timeout_s);
    fprintf(out, "  log_format: %s\n", ds_log_format_name(st->log_format));
    if (st->cors_origins.n > 0) {
        fputs("  cors_origins: ", out);
        print_list(out, &st->cors_origins);
    }
    if (st->pg_listen != NULL) {
        print_string(out, "pg_listen", st->pg_listen);
        fprintf(out, "  pg_max_connections: %d\n", st->pg_max_connections);
        print_number(out, "pg_idle_timeout", st->pg_idle_timeout_s);
        print_number(out, "pg_statement_timeout", st->pg_statement_timeout_s);
        if (st->pg_tls_cert != NULL) {
            print_string(out, "pg_tls_cert", st->pg_tls_cert);
            print_string(out, "pg_tls_key", st->pg_tls_key);
        }
        fprintf(out, "  pg_auth: %s\n", st->pg_trust ? "trust" : "scram-sha-256");
        if (st->pg_user_names.n > 0) {
            fputs("  pg_users:\n", out);
            for (size_t i = 0; i < st->pg_user_names.n; i++) { /* the password never */
                fputs("    ", out);
                print_quoted(out, st->pg_user_names.cols[i]);
                fputs(": \"***\"\n", out);
            }
        }
    }

    for (size_t i = 0; i < cfg->n_sources; i++) {
        const cfg_source *src = &cfg->sources[i];
        fprintf(out, "\n# %s:%d\n%s_db:\n", src->file, src->line, src->name);
        fprintf(out, "  enabled: %s\n", yes_no(src->enabled));
        fprintf(out, "  auto_load: %s\n", yes_no(src->auto_load));
        char *masked = cfg_mask_url(src->url);
        /* Never fall back to the raw url: it may hold the password. */
        print_string(out, "url", masked ? masked : "***");
        free(masked);
        if (src->dataset_query)
            print_block(out, "dataset_query", src->dataset_query);
        if (src->results_query)
            print_block(out, "results_query", src->results_query);
        if (src->query)
            print_block(out, "query", src->query);
        print_string(out, "partition_column", src->partition_column);
        print_string(out, "incremental_column", src->incremental_column);
        print_number(out, "refresh_interval_minutes", src->refresh_interval_minutes);
        print_number(out, "query_timeout", src->query_timeout_s);
        const cfg_key *keys[] = {&src->unique_key_dataset, &src->unique_key_results, &src->unique_key_data};
        const char *key_names[] = {"dataset", "results", "data"};
        bool any_key = false;
        for (size_t k = 0; k < 3; k++) {
            if (keys[k]->n == 0)
                continue;
            if (!any_key)
                fputs("  unique_key:\n", out);
            any_key = true;
            fprintf(out, "    %s: ", key_names[k]);
            print_list(out, keys[k]);
        }
        if (cfg_source_is_split(src)) {
            fprintf(out, "  join:\n    type: %s\n    columns: ", cfg_join_type_name(src->join_type));
            print_list(out, &src->join_columns);
        }
        if (src->lookback)
            print_string(out, "lookback", src->lookback);
        if (src->full_refresh_interval_minutes > 0)
            print_number(out, "full_refresh_interval_minutes", src->full_refresh_interval_minutes);
        if (src->commit_horizon != CFG_HORIZON_AUTO)
            fprintf(out, "  commit_horizon: %s\n", yes_no(src->commit_horizon == CFG_HORIZON_ON));
        fprintf(out, "  capture: %s\n", cfg_capture_name(src->capture));
        if (src->publish_line) {
            fputs("  publish:\n  ", out);
            print_string(out, "path", src->publish_path);
            if (src->publish_partition_by != NULL) {
                fputs("  ", out);
                print_string(out, "partition_by", src->publish_partition_by);
            }
            if (src->publish_every_minutes > 0) {
                fputs("  ", out);
                print_number(out, "every", src->publish_every_minutes);
            } else {
                fputs("    every: sync\n", out);
            }
            fprintf(out, "    keep_versions: %d\n", src->publish_keep_versions);
            if (cfg_source_is_split(src))
                fprintf(out, "    tables: %s\n", yes_no(src->publish_tables));
        }
        if (src->capture == CFG_CAPTURE_LOGICAL) {
            /* duckstore's own publication is shown as a comment: writing the
             * key would make it a user-named one. */
            if (src->publication != NULL)
                print_string(out, "publication", src->publication);
            else
                fprintf(out, "  # publication: %s (created by duckstore)\n", src->publication_name);
            fprintf(out, "  # replication slot: %s\n", src->slot_name);
        }
    }
}

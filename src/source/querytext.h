/* Reading a source query's text without PostgreSQL: a small lexical
 * scanner that knows PostgreSQL's strings, quoted identifiers, dollar
 * quotes and comments, for checks made before a sync reads. */
#ifndef DS_SOURCE_QUERYTEXT_H
#define DS_SOURCE_QUERYTEXT_H

#include <stdbool.h>
#include <stddef.h>

/* The first clause at the top level of query (outside parentheses, string
 * literals, quoted identifiers, dollar quotes and comments) that bounds its
 * rows: "LIMIT" (not LIMIT ALL), "OFFSET" or "FETCH" (FETCH FIRST / NEXT);
 * NULL when there is none. A keyword used as a name (after AS or a dot) is
 * not a clause. Any text is accepted; unterminated quotes or comments run
 * to its end. */
const char *pgsrc_top_level_limit(const char *query);

/* The parts of a query that reads one table, as logical capture needs it:
 * SELECT <select list> FROM <table> [[AS] alias] [WHERE <condition>]. */
typedef struct qt_single_table {
    char *select_list; /* the text between SELECT and FROM, as written */
    char *schema;      /* unquoted, NULL when not qualified */
    char *table; /* unquoted (quoted identifiers keep their case; bare ones are lowercased as PostgreSQL does)
                  */
    char *alias; /* unquoted alias, NULL when none */
    char *where; /* the condition's text, NULL when none */
} qt_single_table;

/* Recognises that shape in query (trailing semicolons and comments as
 * pgsrc_trim_query cuts them). False when the query has another shape,
 * with why saying what is not allowed ("a join (JOIN) is not allowed"),
 * or when memory runs out ("out of memory"); out is then all NULL. */
bool qt_parse_single_table(const char *query, qt_single_table *out, char *why, size_t why_cap);
void qt_single_table_free(qt_single_table *t);

#endif

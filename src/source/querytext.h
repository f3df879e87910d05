/* Reading a source query's text without PostgreSQL: a small lexical
 * scanner that knows PostgreSQL's strings, quoted identifiers, dollar
 * quotes and comments, for checks made before a sync reads. */
#ifndef DS_SOURCE_QUERYTEXT_H
#define DS_SOURCE_QUERYTEXT_H

/* The first clause at the top level of query (outside parentheses, string
 * literals, quoted identifiers, dollar quotes and comments) that bounds its
 * rows: "LIMIT" (not LIMIT ALL), "OFFSET" or "FETCH" (FETCH FIRST / NEXT);
 * NULL when there is none. A keyword used as a name (after AS or a dot) is
 * not a clause. Any text is accepted; unterminated quotes or comments run
 * to its end. */
const char *pgsrc_top_level_limit(const char *query);

#endif

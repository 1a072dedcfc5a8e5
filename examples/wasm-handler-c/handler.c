/*
 * A rumor WASM handler in C (docs/wasm.md), built with clang and Debian's wasi-libc:
 *
 *     clang --target=wasm32-wasi -O2 -o handler.wasm handler.c
 *
 * It reads the event (JSON on stdin) and the contract's variables (RUMOR_EVENT,
 * RUMOR_SELF_NAME, RUMOR_QUERY_NAME, ...), answers a query with a line computed from them,
 * and, when a directory is granted at /data, appends the event to /data/events.jsonl.
 * Anything on stderr goes to the agent's log; the exit code is the result.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The event JSON is small (a user event's payload is at most a few KiB); more is refused. */
#define MAX_EVENT (256 * 1024)

static const char *var(const char *name) {
    const char *value = getenv(name);
    return value ? value : "";
}

int main(void) {
    static char event[MAX_EVENT + 1];
    size_t len = fread(event, 1, MAX_EVENT + 1, stdin);
    if (len > MAX_EVENT) {
        fprintf(stderr, "event over %d bytes\n", MAX_EVENT);
        return 1;
    }
    event[len] = '\0';

    if (strcmp(var("RUMOR_EVENT"), "query") == 0) {
        /* Something computed: how many members the event lists and how big it is. */
        size_t members = 0;
        for (const char *p = event; (p = strstr(p, "\"status\":")) != NULL; p++) {
            members++;
        }
        printf("%s answers %s: event of %zu bytes, %zu members, schema %s\n",
               var("RUMOR_SELF_NAME"), var("RUMOR_QUERY_NAME"), len, members,
               strstr(event, "\"version\":1") ? "v1" : "unknown");
    }

    FILE *log = fopen("/data/events.jsonl", "a");
    if (log == NULL) {
        fprintf(stderr, "not recording: no directory granted at /data\n");
        return 0;
    }
    if (fwrite(event, 1, len, log) != len || fclose(log) != 0) {
        fprintf(stderr, "cannot write /data/events.jsonl\n");
        return 1;
    }
    fprintf(stderr, "recorded a %s event\n", var("RUMOR_EVENT"));
    return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The two pieces of S3 XML cairn reads: error bodies (<Error><Code>..
 * </Code><Message>..</Message></Error>) and the <UploadId> of a
 * CreateMultipartUpload response.
 *
 * Both come from the network, so this is a small, strict, bounded scanner
 * rather than a general XML parser: one linear pass, no recursion, an
 * explicit element stack of fixed depth, no DTDs (a <!DOCTYPE> is
 * rejected, so no entity can ever be defined, let alone expanded), only
 * the five predefined entities and character references.  Every read is
 * checked against the end of the buffer; no NUL terminator is assumed.
 *
 * The scanner validates the document's structure (names, attributes,
 * matching end tags) up to the end of the root element and records where
 * the wanted children of the root are; their text is decoded only once
 * the whole scan succeeded, so outputs are untouched on failure.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "cairn/s3.h"

/* S3 documents are two levels deep; anything much deeper is not S3. */
#define XML_MAX_DEPTH 16

struct xml_slice {
        const char *p;
        size_t len;
        bool found;
};

struct xml_scan {
        const char *p;
        const char *end;
};

static bool is_space(char c)
{
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_name_start(char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == ':';
}

static bool is_name_char(char c)
{
        return is_name_start(c) || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

static size_t left(const struct xml_scan *s)
{
        return (size_t)(s->end - s->p);
}

static bool starts_with(const struct xml_scan *s, const char *lit)
{
        size_t n = strlen(lit);
        return left(s) >= n && memcmp(s->p, lit, n) == 0;
}

/* Moves past the first occurrence of lit; false if it is not there. */
static bool skip_past(struct xml_scan *s, const char *lit)
{
        size_t n = strlen(lit);
        while (left(s) >= n) {
                if (memcmp(s->p, lit, n) == 0) {
                        s->p += n;
                        return true;
                }
                s->p++;
        }
        s->p = s->end;
        return false;
}

static void skip_spaces(struct xml_scan *s)
{
        while (s->p < s->end && is_space(*s->p))
                s->p++;
}

/* A name at s->p; false if there is none. */
static bool scan_name(struct xml_scan *s, const char **ret_name, size_t *ret_len)
{
        const char *start = s->p;
        if (s->p >= s->end || !is_name_start(*s->p))
                return false;
        while (s->p < s->end && is_name_char(*s->p))
                s->p++;
        *ret_name = start;
        *ret_len = (size_t)(s->p - start);
        return true;
}

/*
 * The rest of a start tag after its name: attributes, then '>' or '/>'.
 * 1: complete, 0: ran out of input, -EINVAL: malformed.
 */
static int scan_tag_rest(struct xml_scan *s, bool *ret_empty)
{
        for (;;) {
                bool had_space = s->p < s->end && is_space(*s->p);
                skip_spaces(s);
                if (s->p >= s->end)
                        return 0;
                if (*s->p == '>') {
                        s->p++;
                        *ret_empty = false;
                        return 1;
                }
                if (*s->p == '/') {
                        s->p++;
                        if (s->p >= s->end)
                                return 0;
                        if (*s->p != '>')
                                return -EINVAL;
                        s->p++;
                        *ret_empty = true;
                        return 1;
                }
                const char *name;
                size_t name_len;
                if (!had_space || !scan_name(s, &name, &name_len))
                        return -EINVAL;
                skip_spaces(s);
                if (s->p >= s->end)
                        return 0;
                if (*s->p != '=')
                        return -EINVAL;
                s->p++;
                skip_spaces(s);
                if (s->p >= s->end)
                        return 0;
                char quote = *s->p;
                if (quote != '"' && quote != '\'')
                        return -EINVAL;
                s->p++;
                while (s->p < s->end && *s->p != quote) {
                        if (*s->p == '<')
                                return -EINVAL;
                        s->p++;
                }
                if (s->p >= s->end)
                        return 0;
                s->p++;
        }
}

static bool name_is(const char *name, size_t len, const char *want)
{
        return strlen(want) == len && memcmp(name, want, len) == 0;
}

/*
 * Scans the document for root element `root` and records the content of
 * its first child named wanted[i] into slices[i].  Text outside the root
 * must be whitespace; children of the wanted elements are refused (their
 * content is text).  -EINVAL on anything malformed.  When the input ends
 * before the root is closed the result is 0 if `allow_truncated` (error
 * bodies are read with a cap, and a long message must not hide the code),
 * -EINVAL otherwise; only children that were closed count as found.
 */
static int xml_scan_children(const char *xml, size_t len, const char *root,
                             const char *const *wanted, size_t nwanted, struct xml_slice *slices,
                             bool allow_truncated)
{
        struct xml_scan s = {.p = xml, .end = xml + len};
        struct {
                const char *name;
                size_t len;
        } stack[XML_MAX_DEPTH];
        size_t depth = 0;
        bool root_seen = false;
        /* Index into wanted[] of the open depth-2 child being captured, or nwanted. */
        size_t capture = nwanted;
        const char *capture_start = NULL;

        for (size_t i = 0; i < nwanted; i++)
                slices[i] = (struct xml_slice){0};
        /* A UTF-8 byte order mark is allowed before the prolog. */
        if (len >= 3 && memcmp(xml, "\xef\xbb\xbf", 3) == 0)
                s.p += 3;

        while (s.p < s.end) {
                if (*s.p != '<') {
                        /* Character data: only inside the root; '&' is checked when decoded. */
                        const char *t = s.p;
                        while (s.p < s.end && *s.p != '<')
                                s.p++;
                        if (depth == 0) {
                                for (; t < s.p; t++)
                                        if (!is_space(*t))
                                                return -EINVAL;
                        }
                        continue;
                }
                if (starts_with(&s, "<?")) {
                        if (depth > 0 && capture != nwanted)
                                return -EINVAL;
                        if (!skip_past(&s, "?>"))
                                goto truncated;
                        continue;
                }
                if (starts_with(&s, "<!--")) {
                        s.p += 4;
                        if (!skip_past(&s, "-->"))
                                goto truncated;
                        continue;
                }
                if (starts_with(&s, "<![CDATA[")) {
                        if (depth == 0)
                                return -EINVAL;
                        s.p += 9;
                        if (!skip_past(&s, "]]>"))
                                goto truncated;
                        continue;
                }
                if (left(&s) < 9 && memcmp(s.p, "<![CDATA[", left(&s)) == 0)
                        goto truncated;
                if (left(&s) < 4 && memcmp(s.p, "<!--", left(&s)) == 0)
                        goto truncated;
                if (starts_with(&s, "<!"))
                        return -EINVAL; /* DOCTYPE and friends: never in S3 responses */
                if (starts_with(&s, "</")) {
                        const char *name;
                        size_t name_len;
                        const char *tag = s.p;
                        s.p += 2;
                        if (s.p >= s.end)
                                goto truncated;
                        if (!scan_name(&s, &name, &name_len))
                                return -EINVAL;
                        skip_spaces(&s);
                        if (s.p >= s.end)
                                goto truncated;
                        if (*s.p != '>')
                                return -EINVAL;
                        s.p++;
                        if (depth == 0 || stack[depth - 1].len != name_len ||
                            memcmp(stack[depth - 1].name, name, name_len) != 0)
                                return -EINVAL;
                        if (depth == 2 && capture != nwanted) {
                                slices[capture].p = capture_start;
                                slices[capture].len = (size_t)(tag - capture_start);
                                slices[capture].found = true;
                                capture = nwanted;
                        }
                        depth--;
                        if (depth == 0)
                                return 0; /* the root is closed: what follows is not ours */
                        continue;
                }
                /* A start tag. */
                const char *name;
                size_t name_len;
                bool empty;
                s.p++;
                if (s.p >= s.end)
                        goto truncated;
                if (!scan_name(&s, &name, &name_len))
                        return -EINVAL;
                int r = scan_tag_rest(&s, &empty);
                if (r < 0)
                        return r;
                if (r == 0)
                        goto truncated;
                if (depth == 0) {
                        if (root_seen || !name_is(name, name_len, root))
                                return -EINVAL;
                        root_seen = true;
                }
                if (capture != nwanted)
                        return -EINVAL; /* markup inside a value we want as text */
                if (depth == 1) {
                        for (size_t i = 0; i < nwanted; i++) {
                                if (!slices[i].found && name_is(name, name_len, wanted[i])) {
                                        if (empty) {
                                                slices[i] = (struct xml_slice){
                                                        .p = s.p, .len = 0, .found = true};
                                        } else {
                                                capture = i;
                                                capture_start = s.p;
                                        }
                                        break;
                                }
                        }
                }
                if (empty) {
                        if (depth == 0)
                                return 0; /* <Error/>: a root without children */
                        continue;
                }
                if (depth == XML_MAX_DEPTH)
                        return -EINVAL;
                stack[depth].name = name;
                stack[depth].len = name_len;
                depth++;
        }
truncated:
        if (!root_seen || !allow_truncated)
                return -EINVAL;
        return 0;
}

/* Output with a cap: bytes past it are dropped, the NUL always fits. */
struct text_out {
        char *buf; /* NULL: validate only */
        size_t cap;
        size_t len;
        bool pending_space;
};

static void out_char(struct text_out *o, char c, bool collapse_spaces)
{
        if (collapse_spaces) {
                if (c == ' ') {
                        /* Leading spaces vanish, runs fold into one, trailing ones are dropped. */
                        if (o->len > 0)
                                o->pending_space = true;
                        return;
                }
                if (o->pending_space) {
                        o->pending_space = false;
                        out_char(o, ' ', false);
                }
        }
        if (o->buf && o->len + 1 < o->cap)
                o->buf[o->len] = c;
        o->len++;
}

/* Printable ASCII stays, whitespace becomes a space, anything else '?'. */
static char sanitize(unsigned c)
{
        if (c == '\t' || c == '\n' || c == '\r' || c == ' ')
                return ' ';
        if (c > 0x20 && c < 0x7f)
                return (char)c;
        return '?';
}

/* "&name;" at p (n bytes available); the decoded code point and the bytes used. */
static int decode_entity(const char *p, size_t n, unsigned *ret_cp, size_t *ret_used)
{
        static const struct {
                const char *name;
                unsigned cp;
        } named[] = {{"lt", '<'}, {"gt", '>'}, {"amp", '&'}, {"quot", '"'}, {"apos", '\''}};
        /* The longest reference we accept is "&#x10FFFF;". */
        size_t semi = 1;
        while (semi < n && semi < 11 && p[semi] != ';')
                semi++;
        if (semi >= n || p[semi] != ';')
                return -EINVAL;
        const char *e = p + 1;
        size_t elen = semi - 1;
        for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
                if (name_is(e, elen, named[i].name)) {
                        *ret_cp = named[i].cp;
                        *ret_used = semi + 1;
                        return 0;
                }
        }
        if (elen < 2 || e[0] != '#')
                return -EINVAL;
        unsigned cp = 0, base = 10;
        size_t i = 1;
        if (e[1] == 'x') {
                base = 16;
                i = 2;
                if (elen < 3)
                        return -EINVAL;
        }
        for (; i < elen; i++) {
                char c = e[i];
                unsigned digit;
                if (c >= '0' && c <= '9')
                        digit = (unsigned)(c - '0');
                else if (base == 16 && c >= 'a' && c <= 'f')
                        digit = (unsigned)(c - 'a' + 10);
                else if (base == 16 && c >= 'A' && c <= 'F')
                        digit = (unsigned)(c - 'A' + 10);
                else
                        return -EINVAL;
                cp = cp * base + digit;
                if (cp > 0x10ffff)
                        return -EINVAL;
        }
        /* XML 1.0 Char: no NUL, no C0 controls but whitespace, no surrogates. */
        if (cp == 0 || (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp == 0xfffe || cp == 0xffff)
                return -EINVAL;
        *ret_cp = cp;
        *ret_used = semi + 1;
        return 0;
}

/*
 * Decodes the content of an element (text, entities, CDATA, comments) as
 * printable ASCII into o.  -EINVAL on a bad reference; the scanner already
 * made sure no markup but comments and CDATA is in there.
 */
static int decode_text(const struct xml_slice *sl, struct text_out *o)
{
        struct xml_scan s = {.p = sl->p, .end = sl->p + sl->len};
        while (s.p < s.end) {
                if (starts_with(&s, "<![CDATA[")) {
                        s.p += 9;
                        while (s.p < s.end && !starts_with(&s, "]]>")) {
                                out_char(o, sanitize((unsigned char)*s.p), true);
                                s.p++;
                        }
                        s.p += 3;
                        continue;
                }
                if (starts_with(&s, "<!--")) {
                        s.p += 4;
                        skip_past(&s, "-->");
                        continue;
                }
                if (*s.p == '<')
                        return -EINVAL;
                if (*s.p == '&') {
                        unsigned cp;
                        size_t used;
                        if (decode_entity(s.p, left(&s), &cp, &used) < 0)
                                return -EINVAL;
                        out_char(o, sanitize(cp), true);
                        s.p += used;
                        continue;
                }
                out_char(o, sanitize((unsigned char)*s.p), true);
                s.p++;
        }
        return 0;
}

/* Decodes into buf (cap bytes, truncated, NUL-terminated); buf may be NULL when cap is 0. */
static void decode_into(const struct xml_slice *sl, char *buf, size_t cap)
{
        struct text_out o = {.buf = buf, .cap = cap};
        if (!buf || !cap)
                return;
        (void)decode_text(sl, &o); /* validated before */
        buf[o.len < cap ? o.len : cap - 1] = '\0';
}

int cairn_s3_parse_error(const char *xml, size_t len, char *code, size_t code_len, char *message,
                         size_t message_len)
{
        static const char *const wanted[] = {"Code", "Message"};
        struct xml_slice sl[2];
        struct text_out probe = {0};
        int r;

        if (!xml)
                return -EINVAL;
        r = xml_scan_children(xml, len, "Error", wanted, 2, sl, true);
        if (r < 0)
                return r;
        /* Without a non-empty <Code> this is not an S3 error we can name. */
        if (!sl[0].found || decode_text(&sl[0], &probe) < 0 || probe.len == 0)
                return -EINVAL;
        if (sl[1].found) {
                probe = (struct text_out){0};
                if (decode_text(&sl[1], &probe) < 0)
                        return -EINVAL;
        }
        decode_into(&sl[0], code, code_len);
        if (message && message_len) {
                if (sl[1].found)
                        decode_into(&sl[1], message, message_len);
                else
                        message[0] = '\0';
        }
        return 0;
}

int cairn_s3_parse_upload_id(const char *xml, size_t len, char *upload_id, size_t upload_id_len)
{
        static const char *const wanted[] = {"UploadId"};
        struct xml_slice sl;
        struct text_out probe = {0};
        int r;

        if (!xml || !upload_id || !upload_id_len)
                return -EINVAL;
        r = xml_scan_children(xml, len, "InitiateMultipartUploadResult", wanted, 1, &sl, false);
        if (r < 0)
                return r;
        if (!sl.found || decode_text(&sl, &probe) < 0 || probe.len == 0)
                return -EINVAL;
        /*
         * The id is sent back verbatim in every later request: a byte the
         * sanitizer would have replaced or a space inside means it is not
         * an id we can reproduce.  Probe without collapsing first.
         */
        char tmp[1024];
        if (probe.len >= sizeof(tmp) || probe.len >= upload_id_len)
                return -EOVERFLOW;
        struct text_out o = {.buf = tmp, .cap = sizeof(tmp)};
        decode_text(&sl, &o);
        tmp[o.len] = '\0';
        for (size_t i = 0; i < o.len; i++)
                if (tmp[i] == ' ' || tmp[i] == '?')
                        return -EINVAL;
        memcpy(upload_id, tmp, o.len + 1);
        return 0;
}

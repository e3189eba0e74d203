/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The S3 XML parsers read bytes straight off the network.  Besides the
 * real answers of AWS and versitygw (which must give the right code and
 * message), the tests feed what a broken or hostile server could send:
 * other documents, markup inside values, DTDs, undefined entities, deep
 * nesting, every truncation of a real body.  Each input is copied into a
 * buffer of exactly its length, so that ASan catches any read past it,
 * and outputs are checked to be untouched whenever parsing fails.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cairn/s3.h"

#define SENTINEL 'Z'

/* Real bodies, as AWS S3 and versitygw send them. */
static const char no_such_key[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>"
        "<Key>refs/x/y/v1</Key><RequestId>4442587FB7D0A2F9</RequestId>"
        "<HostId>J6OgJc7O3/Z8tR4x6bRPtLkzG5j2gEt3x3mH+4Ozg1s=</HostId></Error>";

static const char signature_mismatch[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated "
        "does not match the signature you provided. Check your key and signing method."
        "</Message><AWSAccessKeyId>testkey</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256&#xA;"
        "20261126T053805Z&#xA;20261126/us-east-1/s3/aws4_request&#xA;a936</StringToSign>"
        "<CanonicalRequest>GET&#xA;/bkt/nokey&#xA;&#xA;host:127.0.0.1:17070</CanonicalRequest>"
        "<RequestId>C2Q864U00592ZK87</RequestId></Error>";

static const char upload_result[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        "<Bucket>models</Bucket><Key>prod/blobs/sha256/ab</Key>"
        "<UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId>"
        "</InitiateMultipartUploadResult>";

/* The input in a heap buffer of exactly its size: a read past it is an ASan error. */
static char *exact(const char *s, size_t len)
{
        char *p = malloc(len ? len : 1);
        assert_non_null(p);
        memcpy(p, s, len);
        return p;
}

static int parse_error(const char *s, size_t len, char *code, size_t code_len, char *msg,
                       size_t msg_len)
{
        char *p = exact(s, len);
        int r = cairn_s3_parse_error(p, len, code, code_len, msg, msg_len);
        free(p);
        return r;
}

static int parse_error_str(const char *s, char code[64], char msg[256])
{
        memset(code, SENTINEL, 64);
        memset(msg, SENTINEL, 256);
        int r = parse_error(s, strlen(s), code, 64, msg, 256);
        if (r < 0) {
                /* Untouched on failure. */
                for (int i = 0; i < 64; i++)
                        assert_int_equal(code[i], SENTINEL);
                for (int i = 0; i < 256; i++)
                        assert_int_equal(msg[i], SENTINEL);
        }
        return r;
}

static void test_real_errors(void **state)
{
        char code[64], msg[256];
        (void)state;

        assert_int_equal(parse_error_str(no_such_key, code, msg), 0);
        assert_string_equal(code, "NoSuchKey");
        assert_string_equal(msg, "The specified key does not exist.");

        assert_int_equal(parse_error_str(signature_mismatch, code, msg), 0);
        assert_string_equal(code, "SignatureDoesNotMatch");
        assert_string_equal(msg, "The request signature we calculated does not match the "
                                 "signature you provided. Check your key and signing method.");

        assert_int_equal(parse_error_str("<Error><Code>SlowDown</Code><Message>Please reduce "
                                         "your request rate.</Message></Error>",
                                         code, msg),
                         0);
        assert_string_equal(code, "SlowDown");
        assert_string_equal(msg, "Please reduce your request rate.");

        /* No message: an empty one. */
        assert_int_equal(parse_error_str("<Error><Code>AccessDenied</Code></Error>", code, msg),
                         0);
        assert_string_equal(code, "AccessDenied");
        assert_string_equal(msg, "");

        /* Message before code, namespaces and attributes, whitespace between elements. */
        assert_int_equal(parse_error_str("\xef\xbb\xbf<?xml version='1.0'?>\r\n<!-- hi -->\n"
                                         "<Error xmlns=\"urn:x\" a='1>2'>\n  <Message>m</Message>"
                                         "\n  <Code >InvalidAccessKeyId</Code >\n</Error>\n",
                                         code, msg),
                         0);
        assert_string_equal(code, "InvalidAccessKeyId");
        assert_string_equal(msg, "m");
}

static void test_entities_and_text(void **state)
{
        char code[64], msg[256];
        (void)state;

        assert_int_equal(parse_error_str("<Error><Code>X</Code><Message>&lt;a&gt; &amp; &quot;b"
                                         "&quot; &apos;c&apos; &#65;&#x42;&#x63;</Message>"
                                         "</Error>",
                                         code, msg),
                         0);
        assert_string_equal(msg, "<a> & \"b\" 'c' ABc");

        /* CDATA is text; comments vanish; whitespace runs fold, ends are trimmed. */
        assert_int_equal(parse_error_str("<Error><Code>\n  X  \n</Code><Message>  a<![CDATA[<b>&"
                                         "amp;]]><!-- c -->d \t\n e  </Message></Error>",
                                         code, msg),
                         0);
        assert_string_equal(code, "X");
        assert_string_equal(msg, "a<b>&amp;d e");

        /* Non-ASCII and control characters become '?'; newlines from references spaces. */
        assert_int_equal(parse_error_str("<Error><Code>X</Code><Message>caf\xc3\xa9&#xA;"
                                         "x&#233;\x01</Message></Error>",
                                         code, msg),
                         0);
        assert_string_equal(msg, "caf?? x??");

        /* Undefined or malformed references are errors, not text. */
        static const char *const bad[] = {
                "<Error><Code>X</Code><Message>&nbsp;</Message></Error>",
                "<Error><Code>X</Code><Message>&amp</Message></Error>",
                "<Error><Code>X</Code><Message>a & b</Message></Error>",
                "<Error><Code>X</Code><Message>&#0;</Message></Error>",
                "<Error><Code>X</Code><Message>&#x;</Message></Error>",
                "<Error><Code>X</Code><Message>&#xD800;</Message></Error>",
                "<Error><Code>X</Code><Message>&#x110000;</Message></Error>",
                "<Error><Code>X</Code><Message>&#99999999999;</Message></Error>",
                "<Error><Code>X</Code><Message>&#1a;</Message></Error>",
                "<Error><Code>&lt</Code></Error>",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                if (parse_error_str(bad[i], code, msg) != -EINVAL)
                        fail_msg("accepted: %s", bad[i]);
        }
}

static void test_truncation_of_outputs(void **state)
{
        char code[4], msg[6];
        (void)state;

        assert_int_equal(parse_error(no_such_key, strlen(no_such_key), code, sizeof(code), msg,
                                     sizeof(msg)),
                         0);
        assert_string_equal(code, "NoS");
        assert_string_equal(msg, "The s");
        /* A message is optional output. */
        assert_int_equal(parse_error(no_such_key, strlen(no_such_key), code, sizeof(code), NULL,
                                     0),
                         0);
        assert_string_equal(code, "NoS");
}

static void test_not_errors(void **state)
{
        char code[64], msg[256];
        static const char *const bad[] = {
                "",
                " \n ",
                "garbage",
                "<html><body>502 Bad Gateway</body></html>",
                "<ListBucketResult><Name>b</Name></ListBucketResult>",
                "<Error></Error>",
                "<Error/>",
                "<Error><Code></Code></Error>",
                "<Error><Code> \n </Code></Error>",
                "<Error><Message>only a message</Message></Error>",
                "<Error><Detail><Code>Nested</Code></Detail></Error>",
                "garbage<Error><Code>X</Code></Error>",
                "<Error><Code>X</Code></Error>trailing is fine, leading is not",
                "<Error><Code>X</Code></Eror>",
                "<Error><Code>X</Message></Error>",
                "<Error><Code>X<b>y</b></Code></Error>",
                "<Error><Code>X<?pi?></Code></Error>",
                "<!DOCTYPE Error [<!ENTITY e \"x\">]><Error><Code>&e;</Code></Error>",
                "<Error><Code>X</Code><!DOCTYPE x></Error>",
                "<Error a=b><Code>X</Code></Error>",
                "<Error a='1'b='2'><Code>X</Code></Error>",
                "<Error a='<'><Code>X</Code></Error>",
                "<Error><1Code>X</1Code></Error>",
                "< Error><Code>X</Code></Error>",
                "<Error><Code>X</Code></Error/>",
                "</Error>",
                "<![CDATA[x]]><Error><Code>X</Code></Error>",
                "<Error><Code>Y",
                "<Error><Code>Y</Code",
                "<Error><Code>Y</",
                "<Error><Code>Y<",
                "<Error><Code>Y<!-- ",
                "<Error><Code>Y<![CDATA[abc",
                "<Error",
                "<Error x='1",
                "<",
        };
        (void)state;

        /* Leading text is refused; text after the closed root is not ours and is ignored. */
        assert_int_equal(parse_error_str("<Error><Code>X</Code></Error>trailing", code, msg), 0);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                if (strstr(bad[i], "trailing is fine"))
                        continue;
                if (parse_error_str(bad[i], code, msg) != -EINVAL)
                        fail_msg("accepted: %s", bad[i]);
        }
}

static void test_depth(void **state)
{
        char code[64], msg[256], doc[4096];
        (void)state;

        /* Sixteen levels are fine; seventeen are not S3. */
        for (int depth = 14; depth <= 17; depth++) {
                size_t n = (size_t)snprintf(doc, sizeof(doc), "<Error><Code>C</Code>");
                for (int i = 1; i < depth; i++)
                        n += (size_t)snprintf(doc + n, sizeof(doc) - n, "<a>");
                for (int i = 1; i < depth; i++)
                        n += (size_t)snprintf(doc + n, sizeof(doc) - n, "</a>");
                snprintf(doc + n, sizeof(doc) - n, "</Error>");
                int r = parse_error_str(doc, code, msg);
                assert_int_equal(r, depth <= 16 ? 0 : -EINVAL);
        }
        /* A million opening tags: refused, in bounded stack. */
        size_t big = 3u << 20;
        char *deep = malloc(big + 16);
        assert_non_null(deep);
        memset(deep, ' ', big);
        memcpy(deep, "<Error>", 7);
        for (size_t i = 7; i + 3 <= big; i += 3)
                memcpy(deep + i, "<a>", 3);
        assert_int_equal(parse_error(deep, big, code, sizeof(code), msg, sizeof(msg)), -EINVAL);
        free(deep);
}

/*
 * Every prefix of real bodies: never a read past the end (ASan), and a
 * body cut after its </Code> still names the code, since error bodies are
 * read with a cap.
 */
static void test_every_truncation(void **state)
{
        static const char *const docs[] = {no_such_key, signature_mismatch};
        (void)state;

        for (size_t d = 0; d < 2; d++) {
                const char *doc = docs[d];
                size_t len = strlen(doc);
                const char *code_end = strstr(doc, "</Code>");
                assert_non_null(code_end);
                size_t complete = (size_t)(code_end - doc) + strlen("</Code>");
                for (size_t n = 0; n <= len; n++) {
                        char code[64], msg[256];
                        memset(code, SENTINEL, sizeof(code));
                        int r = parse_error(doc, n, code, sizeof(code), msg, sizeof(msg));
                        if (n >= complete) {
                                assert_int_equal(r, 0);
                                assert_true(strcmp(code, "NoSuchKey") == 0 ||
                                            strcmp(code, "SignatureDoesNotMatch") == 0);
                        } else {
                                assert_int_equal(r, -EINVAL);
                                assert_int_equal(code[0], SENTINEL);
                        }
                }
        }
}

static int parse_upload(const char *s, char *id, size_t id_len)
{
        char *p = exact(s, strlen(s));
        int r = cairn_s3_parse_upload_id(p, strlen(s), id, id_len);
        free(p);
        return r;
}

static void test_upload_id(void **state)
{
        char id[128];
        (void)state;

        assert_int_equal(parse_upload(upload_result, id, sizeof(id)), 0);
        assert_string_equal(id, "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA");

        /* versitygw: a UUID; whitespace around it and entities inside are fine. */
        assert_int_equal(parse_upload("<InitiateMultipartUploadResult><UploadId>\n  "
                                      "2f1c1c9a-&#x34;b1e-9c2b &#10;</UploadId>"
                                      "</InitiateMultipartUploadResult>",
                                      id, sizeof(id)),
                         0);
        assert_string_equal(id, "2f1c1c9a-4b1e-9c2b");

        /* Exactly fitting, then one byte too long. */
        assert_int_equal(parse_upload("<InitiateMultipartUploadResult><UploadId>abcd</UploadId>"
                                      "</InitiateMultipartUploadResult>",
                                      id, 5),
                         0);
        assert_string_equal(id, "abcd");
        memset(id, SENTINEL, sizeof(id));
        assert_int_equal(parse_upload("<InitiateMultipartUploadResult><UploadId>abcde</UploadId>"
                                      "</InitiateMultipartUploadResult>",
                                      id, 5),
                         -EOVERFLOW);
        assert_int_equal(id[0], SENTINEL);

        static const char *const bad[] = {
                "",
                "<Error><Code>AccessDenied</Code></Error>",
                "<InitiateMultipartUploadResult></InitiateMultipartUploadResult>",
                "<InitiateMultipartUploadResult><UploadId></UploadId>"
                "</InitiateMultipartUploadResult>",
                "<InitiateMultipartUploadResult><UploadId>a b</UploadId>"
                "</InitiateMultipartUploadResult>",
                "<InitiateMultipartUploadResult><UploadId>a\xc3\xa9</UploadId>"
                "</InitiateMultipartUploadResult>",
                "<InitiateMultipartUploadResult><UploadId>a?b</UploadId>"
                "</InitiateMultipartUploadResult>",
                "<InitiateMultipartUploadResult><X><UploadId>nested</UploadId></X>"
                "</InitiateMultipartUploadResult>",
                /* Truncated: the id may be cut too, so an incomplete document is refused. */
                "<InitiateMultipartUploadResult><UploadId>abc</UploadId>",
                "<InitiateMultipartUploadResult><UploadId>abc",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                memset(id, SENTINEL, sizeof(id));
                if (parse_upload(bad[i], id, sizeof(id)) != -EINVAL)
                        fail_msg("accepted: %s", bad[i]);
                assert_int_equal(id[0], SENTINEL);
        }
        assert_int_equal(cairn_s3_parse_upload_id(upload_result, strlen(upload_result), id, 0),
                         -EINVAL);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_real_errors),
                cmocka_unit_test(test_entities_and_text),
                cmocka_unit_test(test_truncation_of_outputs),
                cmocka_unit_test(test_not_errors),
                cmocka_unit_test(test_depth),
                cmocka_unit_test(test_every_truncation),
                cmocka_unit_test(test_upload_id),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}

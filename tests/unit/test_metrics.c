/*
 * Prometheus exposition writers: escaping, label sets, number formatting and histograms, checked
 * against the format's rules (the integration test parses a whole scrape with the official
 * prometheus_client parser).
 */
#include "server/metrics.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

START_TEST(family_and_escaping)
{
    srv_mx_buf b = {0};
    srv_mx_family(&b, "moeserve_x_total", "counter", "Back\\slash and\nnewline");
    const char *names[] = {"model", "path"};
    const char *values[] = {"a\"b", "c:\\d\ne"};
    char labels[128];
    ck_assert_int_gt(srv_mx_labels(labels, sizeof labels, 2, names, values), 0);
    ck_assert_str_eq(labels, "{model=\"a\\\"b\",path=\"c:\\\\d\\ne\"}");
    srv_mx_sample_u64(&b, "moeserve_x_total", labels, 42);
    ck_assert(!b.failed);
    ck_assert_str_eq(b.data, "# HELP moeserve_x_total Back\\\\slash and\\nnewline\n"
                             "# TYPE moeserve_x_total counter\n"
                             "moeserve_x_total{model=\"a\\\"b\",path=\"c:\\\\d\\ne\"} 42\n");
    ck_assert_int_eq(srv_mx_labels(labels, 8, 2, names, values), -1);
    ck_assert_int_eq(srv_mx_labels(labels, sizeof labels, 0, NULL, NULL), 0);
    ck_assert_str_eq(labels, "");
    srv_mx_buf_release(&b);
}
END_TEST

START_TEST(number_formatting)
{
    srv_mx_buf b = {0};
    srv_mx_sample(&b, "a", "", 0.005);
    srv_mx_sample(&b, "b", "", 3.0);
    srv_mx_sample(&b, "c", "", INFINITY);
    srv_mx_sample(&b, "d", "", -INFINITY);
    srv_mx_sample(&b, "e", "", NAN);
    srv_mx_sample(&b, "f", "", 0.1 + 0.2);
    srv_mx_sample(&b, "g", "", 1e300);
    ck_assert_str_eq(b.data,
                     "a 0.005\nb 3\nc +Inf\nd -Inf\ne NaN\nf 0.30000000000000004\ng 1e+300\n");
    srv_mx_buf_release(&b);
}
END_TEST

START_TEST(histogram_cumulative)
{
    static const double bounds[] = {0.1, 1, 10};
    srv_mx_histogram h;
    ck_assert_int_eq(srv_mx_histogram_init(&h, bounds, 3), 0);
    const double obs[] = {0.05, 0.1, 0.5, 2, 20, 30};
    for (size_t i = 0; i < 6; i++)
        srv_mx_histogram_observe(&h, obs[i]);
    srv_mx_buf b = {0};
    srv_mx_histogram_write(&b, "lat_seconds", "", &h);
    srv_mx_histogram_write(&b, "lat_seconds", "{endpoint=\"chat\"}", &h);
    ck_assert_str_eq(b.data, "lat_seconds_bucket{le=\"0.1\"} 2\n"
                             "lat_seconds_bucket{le=\"1\"} 3\n"
                             "lat_seconds_bucket{le=\"10\"} 4\n"
                             "lat_seconds_bucket{le=\"+Inf\"} 6\n"
                             "lat_seconds_sum 52.65\n"
                             "lat_seconds_count 6\n"
                             "lat_seconds_bucket{endpoint=\"chat\",le=\"0.1\"} 2\n"
                             "lat_seconds_bucket{endpoint=\"chat\",le=\"1\"} 3\n"
                             "lat_seconds_bucket{endpoint=\"chat\",le=\"10\"} 4\n"
                             "lat_seconds_bucket{endpoint=\"chat\",le=\"+Inf\"} 6\n"
                             "lat_seconds_sum{endpoint=\"chat\"} 52.65\n"
                             "lat_seconds_count{endpoint=\"chat\"} 6\n");
    srv_mx_buf_release(&b);
    srv_mx_histogram_release(&h);
}
END_TEST

START_TEST(large_output_grows)
{
    srv_mx_buf b = {0};
    for (int i = 0; i < 10000; i++)
        srv_mx_sample_u64(&b, "moeserve_expert_activations_total", "{layer=\"1\"}", (uint64_t)i);
    ck_assert(!b.failed);
    ck_assert_uint_eq(strlen(b.data), b.len);
    ck_assert_ptr_nonnull(strstr(b.data, "} 9999\n"));
    srv_mx_buf_release(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    tcase_add_test(tc, family_and_escaping);
    tcase_add_test(tc, number_formatting);
    tcase_add_test(tc, histogram_cumulative);
    tcase_add_test(tc, large_output_grows);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

package calgate.quickstart;

import calgate.v1.CalendarWriteServiceGrpc;
import calgate.v1.CalendarWriteServiceGrpc.CalendarWriteServiceBlockingStub;
import calgate.v1.Calgate.BuildAuthorizeUrlRequest;
import calgate.v1.Calgate.Change;
import calgate.v1.Calgate.ChangeTracking;
import calgate.v1.Calgate.DeleteEventRequest;
import calgate.v1.Calgate.Event;
import calgate.v1.Calgate.EventChangeKind;
import calgate.v1.Calgate.EventTime;
import calgate.v1.Calgate.ExchangeCodeRequest;
import calgate.v1.Calgate.GetGrantRequest;
import calgate.v1.Calgate.Grant;
import calgate.v1.Calgate.ListCalendarsRequest;
import calgate.v1.Calgate.UpsertEventRequest;
import calgate.v1.Calgate.UpsertEventResponse;
import calgate.v1.Calgate.WatchChangesRequest;
import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Timestamp;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import io.grpc.CallCredentials;
import io.grpc.Context;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.StreamObserver;
import java.io.IOException;
import java.net.URI;
import java.net.URLDecoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.Executor;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * Calls calgate from Java the way an internal service does: connects a user (BuildAuthorizeUrl,
 * the user's consent, ExchangeCode), lists their calendars, writes and deletes an event, shows what
 * a bad request's status carries, and follows WatchChanges on the async stub, resuming from a
 * cursor.
 *
 * <p>It runs against a calgate sandbox with [callbacks] configured, whose embedded fake Cronofy
 * approves consent at once and offers controls that play the user:
 *
 * <pre>
 *   cargo run --release -- sandbox --config examples/calgate.toml
 *   cd clients/java &amp;&amp; ./mvnw -q compile exec:java
 * </pre>
 *
 * <p>CALGATE_ADDR (default localhost:50051) and CALGATE_API_KEY (default demo-api-key) override.
 * It exits non-zero on any unexpected status.
 */
public final class Quickstart {
  private static final String REDIRECT_URI = "http://localhost:3000/cronofy/callback";
  private static final String USER_REF = "java-quickstart";
  private static final String EVENT_ID = "java-quickstart-1";
  /**
   * Every unary call gets this deadline: calgate's own budget to Cronofy is shorter, so a slow
   * Cronofy surfaces as a status from calgate, not as a hung caller.
   */
  private static final long CALL_SECONDS = 10;
  /** WatchChanges outlives the unary calls: its own, longer deadline. */
  private static final long WATCH_SECONDS = 60;

  private final CalendarWriteServiceGrpc.CalendarWriteServiceStub async;
  private final HttpClient browser =
      HttpClient.newBuilder()
          .followRedirects(HttpClient.Redirect.NEVER)
          .connectTimeout(Duration.ofSeconds(10))
          .build();

  private Quickstart(ManagedChannel channel, String apiKey) {
    this.async =
        CalendarWriteServiceGrpc.newStub(channel).withCallCredentials(new ApiKey(apiKey));
  }

  /** A blocking stub with a fresh deadline for each call. */
  private CalendarWriteServiceBlockingStub calgate() {
    return CalendarWriteServiceGrpc.newBlockingStub(async.getChannel())
        .withCallCredentials(async.getCallOptions().getCredentials())
        .withDeadlineAfter(CALL_SECONDS, TimeUnit.SECONDS);
  }

  public static void main(String[] args) throws Exception {
    String addr = env("CALGATE_ADDR", "localhost:50051");
    // Plain text only because the sandbox listens on loopback; in a cluster use
    // TlsChannelCredentials.
    ManagedChannel channel =
        Grpc.newChannelBuilder(addr, InsecureChannelCredentials.create()).build();
    try {
      new Quickstart(channel, env("CALGATE_API_KEY", "demo-api-key")).run();
    } catch (StatusRuntimeException error) {
      System.err.println("quickstart failed: " + error.getStatus());
      System.exit(1);
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  private void run() throws Exception {
    // Only changes recorded from now on (after = "").
    Watch watch = watch("");
    Connected connected = connect();
    System.out.printf(
        "connected %s (%s)%n", connected.grant.getSub(), connected.grant.getStatus());
    watch.next();

    String calendarId = writableCalendar();
    UpsertEventResponse written =
        calgate()
            .upsertEvent(
                UpsertEventRequest.newBuilder()
                    .setUserRef(USER_REF)
                    .setCalendarId(calendarId)
                    .setEvent(event("Written by clients/java Quickstart"))
                    .build());
    // DELIVERY_EMAIL_INVITE when the user chose Free/Busy or No-Access mode at consent.
    System.out.printf("upserted %s (%s)%n", EVENT_ID, written.getDelivery());
    calgate()
        .deleteEvent(
            DeleteEventRequest.newBuilder()
                .setUserRef(USER_REF)
                .setCalendarId(calendarId)
                .setEventId(EVENT_ID)
                .build());
    System.out.printf("deleted %s%n", EVENT_ID);

    showBadRequest(calendarId);
    followChanges(watch, connected, calendarId);
  }

  private record Connected(Grant grant, String fakeHost) {}

  /**
   * Plays a user connecting their calendar: calgate builds the consent URL, the user's browser
   * follows it and comes back with a code, and ExchangeCode turns it into a grant.
   * expected_user_ref is the user of the browser session the redirect reached (CSRF protection).
   */
  private Connected connect() throws IOException, InterruptedException {
    String url =
        calgate()
            .buildAuthorizeUrl(
                BuildAuthorizeUrlRequest.newBuilder()
                    .setRedirectUri(REDIRECT_URI)
                    .setUserRef(USER_REF)
                    .build())
            .getUrl();
    Map<String, String> redirect = consent(url);
    Grant grant =
        calgate()
            .exchangeCode(
                ExchangeCodeRequest.newBuilder()
                    .setCode(redirect.get("code"))
                    .setRedirectUri(REDIRECT_URI)
                    .setState(redirect.get("state"))
                    .setExpectedUserRef(USER_REF)
                    .build())
            .getGrant();
    URI authorize = URI.create(url);
    return new Connected(grant, authorize.getScheme() + "://" + authorize.getRawAuthority());
  }

  /** Plays the user's browser: opens the consent URL, reads code and state from the redirect. */
  private Map<String, String> consent(String url) throws IOException, InterruptedException {
    HttpResponse<Void> response =
        browser.send(
            HttpRequest.newBuilder(URI.create(url)).timeout(Duration.ofSeconds(10)).build(),
            HttpResponse.BodyHandlers.discarding());
    String location =
        response
            .headers()
            .firstValue("location")
            .orElseThrow(
                () ->
                    new IllegalStateException(
                        "the consent page did not redirect: " + response.statusCode()));
    Map<String, String> query = new HashMap<>();
    for (String pair : URI.create(location).getRawQuery().split("&")) {
      String[] kv = pair.split("=", 2);
      query.put(
          URLDecoder.decode(kv[0], StandardCharsets.UTF_8),
          kv.length > 1 ? URLDecoder.decode(kv[1], StandardCharsets.UTF_8) : "");
    }
    return query;
  }

  private String writableCalendar() {
    return calgate()
        .listCalendars(ListCalendarsRequest.newBuilder().setUserRef(USER_REF).build())
        .getCalendarsList()
        .stream()
        .filter(calendar -> !calendar.getReadonly())
        .peek(c -> System.out.printf("calendar %s (%s)%n", c.getCalendarId(), c.getCalendarName()))
        .map(calendar -> calendar.getCalendarId())
        .findFirst()
        .orElseThrow(() -> new IllegalStateException("no calendar calgate may write to"));
  }

  private static Event event(String summary) {
    return Event.newBuilder()
        .setEventId(EVENT_ID)
        .setSummary(summary)
        .setStart(EventTime.newBuilder().setTime(Timestamp.newBuilder().setSeconds(1_800_000_000L)))
        .setEnd(EventTime.newBuilder().setTime(Timestamp.newBuilder().setSeconds(1_800_001_800L)))
        .build();
  }

  /**
   * Sends an event without its required summary and prints what the status carries: the ErrorInfo
   * reason to branch on, and a BadRequest naming each field that was wrong.
   */
  private void showBadRequest(String calendarId) throws InvalidProtocolBufferException {
    try {
      calgate()
          .upsertEvent(
              UpsertEventRequest.newBuilder()
                  .setUserRef(USER_REF)
                  .setCalendarId(calendarId)
                  .setEvent(event(""))
                  .build());
      throw new IllegalStateException("an event without a summary was accepted");
    } catch (StatusRuntimeException error) {
      com.google.rpc.Status status = StatusProto.fromThrowable(error);
      if (error.getStatus().getCode() != Status.Code.INVALID_ARGUMENT || status == null) {
        throw error;
      }
      String reason = "";
      int fields = 0;
      for (Any detail : status.getDetailsList()) {
        if (detail.is(ErrorInfo.class)) {
          reason = detail.unpack(ErrorInfo.class).getReason();
        } else if (detail.is(BadRequest.class)) {
          for (BadRequest.FieldViolation violation :
              detail.unpack(BadRequest.class).getFieldViolationsList()) {
            System.out.printf("  field %s: %s%n", violation.getField(), violation.getDescription());
            fields++;
          }
        }
      }
      System.out.printf("refused %s, reason %s%n", error.getStatus().getCode(), reason);
      if (reason.isEmpty() || fields == 0) {
        throw new IllegalStateException("no ErrorInfo reason or no field violation: " + status);
      }
    }
  }

  /**
   * Writes an event, has the user delete it in their calendar app, and receives the deletion; then
   * stops watching, the user's calendar disconnects meanwhile, and a stream resumed after the
   * stored cursor still receives that change.
   */
  private void followChanges(Watch watch, Connected connected, String calendarId)
      throws Exception {
    waitForChannel();
    calgate()
        .upsertEvent(
            UpsertEventRequest.newBuilder()
                .setUserRef(USER_REF)
                .setCalendarId(calendarId)
                .setEvent(event("Interview"))
                .build());
    String sub = connected.grant.getSub();
    sandboxControl(
        connected.fakeHost,
        "accounts/" + sub + "/events/delete",
        "{\"calendar_id\":\"" + calendarId + "\",\"event_id\":\"" + EVENT_ID + "\"}");
    Change deleted = watch.next();
    if (!deleted.getEvent().getEventId().equals(EVENT_ID)
        || deleted.getEvent().getKind() != EventChangeKind.EVENT_CHANGE_KIND_DELETED) {
      throw new IllegalStateException("expected the deletion of " + EVENT_ID + ", got " + deleted);
    }
    // A real consumer stores this cursor with the work it did.
    String cursor = deleted.getCursor();
    watch.cancel();

    // Away, the consumer misses the user's calendar disconnecting.
    sandboxControl(connected.fakeHost, "accounts/" + sub + "/profile/disconnect", "{}");
    Watch resumed = watch(cursor);
    Change disconnected = resumed.next();
    if (!disconnected.getGrant().getReason().equals("PROFILE_DISCONNECTED")) {
      throw new IllegalStateException("expected PROFILE_DISCONNECTED, got " + disconnected);
    }
    System.out.printf("relink at %s%n", disconnected.getGrant().getRelinkUrl());
    resumed.cancel();
  }

  /** Waits for calgate to open the user's push notification channel (in the background). */
  private void waitForChannel() throws InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
    while (System.nanoTime() < deadline) {
      ChangeTracking tracking =
          calgate()
              .getGrant(GetGrantRequest.newBuilder().setUserRef(USER_REF).build())
              .getGrant()
              .getChangeTracking();
      if (tracking == ChangeTracking.CHANGE_TRACKING_EVENTS) {
        return;
      }
      Thread.sleep(200);
    }
    throw new IllegalStateException("the push notification channel never opened");
  }

  /** A WatchChanges stream on the async stub, handing its changes to the caller's thread. */
  private final class Watch implements StreamObserver<Change> {
    private final BlockingQueue<Object> received = new LinkedBlockingQueue<>();
    private final Context.CancellableContext context = Context.current().withCancellation();

    Watch(String after) {
      context.run(
          () ->
              async
                  .withDeadlineAfter(WATCH_SECONDS, TimeUnit.SECONDS)
                  .watchChanges(WatchChangesRequest.newBuilder().setAfter(after).build(), this));
    }

    Change next() throws InterruptedException {
      Object item = received.poll(WATCH_SECONDS, TimeUnit.SECONDS);
      if (item instanceof Change change) {
        String what =
            change.hasGrant()
                ? "grant " + change.getGrant().getStatus() + " (" + change.getGrant().getReason() + ")"
                : "event " + change.getEvent().getEventId() + " " + change.getEvent().getKind();
        System.out.printf("%s: %s: %s%n", change.getCursor(), change.getUserRef(), what);
        return change;
      }
      if (item instanceof StatusRuntimeException error) {
        throw error;
      }
      throw new IllegalStateException("WatchChanges: no change within " + WATCH_SECONDS + " s");
    }

    void cancel() {
      context.cancel(null);
    }

    @Override
    public void onNext(Change change) {
      received.add(change);
    }

    @Override
    public void onError(Throwable error) {
      received.add(Status.fromThrowable(error).asRuntimeException());
    }

    @Override
    public void onCompleted() {
      received.add(Status.UNAVAILABLE.withDescription("the stream ended").asRuntimeException());
    }
  }

  private Watch watch(String after) {
    return new Watch(after);
  }

  /** Plays the user in the sandbox: a POST to the embedded fake Cronofy's controls. */
  private void sandboxControl(String fakeHost, String path, String body)
      throws IOException, InterruptedException {
    HttpResponse<String> response =
        browser.send(
            HttpRequest.newBuilder(URI.create(fakeHost + "/sandbox/" + path))
                .timeout(Duration.ofSeconds(10))
                .header("content-type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body))
                .build(),
            HttpResponse.BodyHandlers.ofString());
    if (response.statusCode() != 200) {
      throw new IllegalStateException("sandbox control " + path + ": " + response.statusCode());
    }
  }

  /** Per-call credentials: the tenant's API key as a bearer token on every call. */
  private static final class ApiKey extends CallCredentials {
    private static final Metadata.Key<String> AUTHORIZATION =
        Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
    private final String key;

    ApiKey(String key) {
      this.key = key;
    }

    @Override
    public void applyRequestMetadata(RequestInfo info, Executor executor, MetadataApplier applier) {
      Metadata headers = new Metadata();
      headers.put(AUTHORIZATION, "Bearer " + key);
      applier.apply(headers);
    }
  }

  private static String env(String name, String fallback) {
    String value = System.getenv(name);
    return value == null || value.isEmpty() ? fallback : value;
  }
}

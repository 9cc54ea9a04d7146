package churn.validator;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadFeature;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.LocalDate;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.spark.sql.Column;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF2;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.DataType;

/**
 * The event validator's fast path on the JVM: the typed fields of a Kafka record that the
 * contract's one validator (features/validate.py, check_record) accepts, or null whenever
 * there is the least doubt. A null sends the record to check_record, which decides; this
 * class never rejects anything, so it cannot disagree with the contract about a reject.
 *
 * It follows only the path of a plainly valid event (docs/decisions.md, decision 44):
 * one object whose known fields have exactly their contract types, an optional
 * "properties" object of scalars, no arrays or other nested objects, ASCII or strictly
 * valid UTF-8, no surrogate escapes, no number where the contract would need the Python
 * parser's reading (a fraction or exponent where an integer goes, a negative number,
 * an integer wider than 64 bits). Duplicate keys fail the parse (Jackson's strict
 * duplicate detection), as they fail check_record.
 *
 * The vocabulary comes from features/contract.py through the constructor, so the
 * contract has one definition. The output is a struct in the order of TYPED_FIELDS.
 */
public final class FastPath implements UDF2<byte[], byte[], Row> {
  private static final long serialVersionUID = 1L;
  private static final JsonFactory JSON =
      JsonFactory.builder().enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION).build();
  private static final int STRING = 0;
  private static final int INTEGER = 1;
  private static final int NUMBER = 2;

  private final int maxValueBytes;
  private final int maxIdChars;
  private final int[] forbiddenIdChars;
  private final Set<String> eventTypes;
  private final Set<String> devices;
  private final Set<String> amountRequired;
  private final Set<Integer> versions;
  private final String[] top;
  private final int[] topTypes;
  private final String[] props;
  private final int[] propTypes;
  private final Map<String, Integer> topIndex = new HashMap<>();
  private final Map<String, Integer> propIndex = new HashMap<>();
  private final int eventId, userId, eventType, eventTime, schemaVersion;
  private final int amount, currency, quantity, device;
  private final int[] outputProps;

  /**
   * @param eventTypes, devices, amountRequired, versions the contract's vocabulary
   * @param top, topTypes the required fields and their JSON types (string, integer, number)
   * @param props, propTypes the property fields and their JSON types
   * @param outputProps the property fields of the output, after the five required ones
   * @param maxIdChars, forbiddenIdChars the ids' length limit and the inclusive code point
   *     ranges they must not contain, as lo, hi pairs
   */
  public FastPath(
      int maxValueBytes,
      List<String> eventTypes,
      List<String> devices,
      List<String> amountRequired,
      List<Integer> versions,
      List<String> top,
      List<String> topTypes,
      List<String> props,
      List<String> propTypes,
      List<String> outputProps,
      int maxIdChars,
      List<Integer> forbiddenIdChars) {
    this.maxValueBytes = maxValueBytes;
    this.maxIdChars = maxIdChars;
    this.forbiddenIdChars = forbiddenIdChars.stream().mapToInt(Integer::intValue).toArray();
    this.eventTypes = new HashSet<>(eventTypes);
    this.devices = new HashSet<>(devices);
    this.amountRequired = new HashSet<>(amountRequired);
    this.versions = new HashSet<>(versions);
    this.top = top.toArray(new String[0]);
    this.topTypes = topTypes.stream().mapToInt(FastPath::type).toArray();
    this.props = props.toArray(new String[0]);
    this.propTypes = propTypes.stream().mapToInt(FastPath::type).toArray();
    for (int i = 0; i < this.top.length; i++) topIndex.put(this.top[i], i);
    for (int i = 0; i < this.props.length; i++) propIndex.put(this.props[i], i);
    eventId = top.indexOf("event_id");
    userId = top.indexOf("user_id");
    eventType = top.indexOf("event_type");
    eventTime = top.indexOf("event_time");
    schemaVersion = top.indexOf("schema_version");
    amount = props.indexOf("amount");
    currency = props.indexOf("currency");
    quantity = props.indexOf("quantity");
    device = props.indexOf("device");
    this.outputProps = outputProps.stream().mapToInt(props::indexOf).toArray();
    if (Arrays.stream(this.outputProps).anyMatch(i -> i < 0)
        || Math.min(Math.min(eventId, userId), Math.min(eventType, eventTime)) < 0
        || Math.min(Math.min(schemaVersion, amount), Math.min(currency, quantity)) < 0
        || device < 0) {
      throw new IllegalArgumentException("the contract lacks a field the fast path needs");
    }
  }

  /** This fast path over two columns (a record's key and value), typed as {@code ddl}. */
  public Column column(Column key, Column value, String ddl) {
    return functions.udf(this, DataType.fromDDL(ddl)).apply(key, value);
  }

  private static int type(String name) {
    switch (name) {
      case "string":
        return STRING;
      case "integer":
        return INTEGER;
      case "number":
        return NUMBER;
      default:
        throw new IllegalArgumentException("unknown JSON type " + name);
    }
  }

  @Override
  public Row call(byte[] key, byte[] value) {
    if (key == null || value == null || value.length > maxValueBytes) return null;
    if (!startsAnObject(value) || !plainText(value)) return null;
    try (JsonParser parser = JSON.createParser(value)) {
      return event(parser, key);
    } catch (IOException | RuntimeException e) {
      return null;
    }
  }

  /** JSON whitespace, then '{': no byte order mark (check_record refuses one, Jackson skips it). */
  private static boolean startsAnObject(byte[] value) {
    for (byte b : value) {
      if (b != ' ' && b != '\t' && b != '\n' && b != '\r') return b == '{';
    }
    return false;
  }

  /** ASCII or strictly valid UTF-8, with no escape of a UTF-16 surrogate. */
  private static boolean plainText(byte[] value) {
    boolean ascii = true;
    for (int i = 0; i < value.length; i++) {
      byte b = value[i];
      if (b < 0) {
        ascii = false;
      } else if (b == '\\' && i + 3 < value.length && value[i + 1] == 'u') {
        byte d = value[i + 2];
        byte h = value[i + 3];
        boolean high = (h >= '8' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F');
        if ((d == 'd' || d == 'D') && high) return false;
      }
    }
    if (ascii) return true;
    try {
      StandardCharsets.UTF_8
          .newDecoder()
          .onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT)
          .decode(ByteBuffer.wrap(value));
      return true;
    } catch (CharacterCodingException e) {
      return false;
    }
  }

  private Row event(JsonParser parser, byte[] key) throws IOException {
    if (parser.nextToken() != JsonToken.START_OBJECT) return null;
    Object[] topValues = new Object[top.length];
    Object[] propValues = new Object[props.length];
    JsonToken token;
    while ((token = parser.nextToken()) == JsonToken.FIELD_NAME) {
      String name = parser.currentName();
      JsonToken kind = parser.nextToken();
      if (name.equals("properties")) {
        if (kind == JsonToken.START_OBJECT) {
          if (!fields(parser, propIndex, propTypes, propValues)) return null;
        } else if (kind != JsonToken.VALUE_NULL) {
          return null;
        }
      } else if (!field(parser, kind, topIndex.get(name), topTypes, topValues)) {
        return null;
      }
    }
    if (token != JsonToken.END_OBJECT || parser.nextToken() != null) return null;
    return typed(topValues, propValues, key);
  }

  private boolean fields(JsonParser parser, Map<String, Integer> index, int[] types, Object[] out)
      throws IOException {
    JsonToken token;
    while ((token = parser.nextToken()) == JsonToken.FIELD_NAME) {
      String name = parser.currentName();
      if (!field(parser, parser.nextToken(), index.get(name), types, out)) return false;
    }
    return token == JsonToken.END_OBJECT;
  }

  /** One field's value: a scalar, of its contract type when the field is known. */
  private static boolean field(
      JsonParser parser, JsonToken kind, Integer index, int[] types, Object[] out)
      throws IOException {
    if (!kind.isScalarValue()) return false;
    if (index == null || kind == JsonToken.VALUE_NULL) return true;
    Object value = value(parser, kind, types[index]);
    out[index] = value;
    return value != null;
  }

  private static Object value(JsonParser parser, JsonToken kind, int type) throws IOException {
    switch (type) {
      case STRING:
        return kind == JsonToken.VALUE_STRING ? parser.getText() : null;
      case INTEGER:
        if (kind != JsonToken.VALUE_NUMBER_INT
            || parser.getNumberType() != JsonParser.NumberType.INT) return null;
        int whole = parser.getIntValue();
        return whole >= 0 ? whole : null;
      default:
        if (kind != JsonToken.VALUE_NUMBER_INT && kind != JsonToken.VALUE_NUMBER_FLOAT) return null;
        String text = parser.getText();
        if (text.startsWith("-")) return null;
        if (kind == JsonToken.VALUE_NUMBER_INT) {
          JsonParser.NumberType size = parser.getNumberType();
          if (size == JsonParser.NumberType.BIG_INTEGER) return null;
          return (double) parser.getLongValue();
        }
        double number = Double.parseDouble(text);
        return Double.isFinite(number) ? number : null;
    }
  }

  /**
   * At most maxIdChars UTF-16 units (so at most as many code points: never longer than
   * check_record allows) and no char in a forbidden range (all of them lie in the BMP).
   */
  private boolean plainId(String id) {
    if (id.length() > maxIdChars) return false;
    for (int i = 0; i < id.length(); i++) {
      char c = id.charAt(i);
      for (int r = 0; r < forbiddenIdChars.length; r += 2) {
        if (c >= forbiddenIdChars[r] && c <= forbiddenIdChars[r + 1]) return false;
      }
    }
    return true;
  }

  private Row typed(Object[] t, Object[] p, byte[] key) {
    for (int i = 0; i < t.length; i++) {
      if (t[i] == null || "".equals(t[i])) return null;
    }
    String type = (String) t[eventType];
    String user = (String) t[userId];
    if (!versions.contains(t[schemaVersion]) || !eventTypes.contains(type)) return null;
    if (!Arrays.equals(key, user.getBytes(StandardCharsets.UTF_8))) return null;
    if (!plainId((String) t[eventId]) || !plainId(user)) return null;
    Instant at = instant((String) t[eventTime]);
    if (at == null) return null;
    if (p[amount] == null && amountRequired.contains(type)) return null;
    String money = (String) p[currency];
    if (money != null && !currencyCode(money)) return null;
    if (p[device] != null && !devices.contains(p[device])) return null;
    Object[] row = new Object[5 + outputProps.length];
    row[0] = t[eventId];
    row[1] = user;
    row[2] = type;
    row[3] = at;
    row[4] = t[schemaVersion];
    for (int i = 0; i < outputProps.length; i++) row[5 + i] = p[outputProps[i]];
    return RowFactory.create(row);
  }

  private static boolean currencyCode(String text) {
    if (text.length() != 3) return false;
    for (int i = 0; i < 3; i++) {
      char c = text.charAt(i);
      if (c < 'A' || c > 'Z') return false;
    }
    return true;
  }

  /**
   * yyyy-MM-ddTHH:mm:ss[.f{1,9}](Z|+HH:MM|-HH:MM), years 1000-9998, fraction cut to
   * microseconds (as check_record does); null for anything else.
   */
  static Instant instant(String text) {
    int n = text.length();
    if (n < 20 || text.charAt(4) != '-' || text.charAt(7) != '-' || text.charAt(10) != 'T'
        || text.charAt(13) != ':' || text.charAt(16) != ':') return null;
    int year = digits(text, 0, 4);
    int month = digits(text, 5, 7);
    int day = digits(text, 8, 10);
    int hour = digits(text, 11, 13);
    int minute = digits(text, 14, 16);
    int second = digits(text, 17, 19);
    if (year < 1000 || year > 9998 || month < 1 || month > 12 || day < 1
        || Math.min(hour, Math.min(minute, second)) < 0
        || hour > 23 || minute > 59 || second > 59) return null;
    int i = 19;
    long micros = 0;
    if (text.charAt(i) == '.') {
      int start = ++i;
      while (i < n && text.charAt(i) >= '0' && text.charAt(i) <= '9') i++;
      int count = i - start;
      if (count < 1 || count > 9) return null;
      for (int k = 0; k < 6; k++) {
        micros = micros * 10 + (start + k < i ? text.charAt(start + k) - '0' : 0);
      }
    }
    int offset;
    if (i == n - 1 && text.charAt(i) == 'Z') {
      offset = 0;
    } else if (i == n - 6 && (text.charAt(i) == '+' || text.charAt(i) == '-')
        && text.charAt(i + 3) == ':') {
      int hours = digits(text, i + 1, i + 3);
      int minutes = digits(text, i + 4, i + 6);
      if (hours < 0 || hours > 18 || minutes < 0 || minutes > 59) return null;
      offset = (text.charAt(i) == '+' ? 1 : -1) * (hours * 3600 + minutes * 60);
    } else {
      return null;
    }
    if (month == 2 ? day > (LocalDate.of(year, 1, 1).isLeapYear() ? 29 : 28)
        : day > LocalDate.of(year, month, 1).lengthOfMonth()) return null;
    long seconds = LocalDate.of(year, month, day).toEpochDay() * 86_400L
        + hour * 3600L + minute * 60L + second - offset;
    return Instant.ofEpochSecond(seconds, micros * 1000L);
  }

  /** The ASCII digits text[from, to) as a number, or -1 when one is not a digit. */
  private static int digits(String text, int from, int to) {
    int number = 0;
    for (int i = from; i < to; i++) {
      char c = text.charAt(i);
      if (c < '0' || c > '9') return -1;
      number = number * 10 + (c - '0');
    }
    return number;
  }
}
